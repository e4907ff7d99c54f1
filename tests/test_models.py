"""Model and layer resolution by name, offline."""

from __future__ import annotations

import pytest
import torch

from scorecam_cli.errors import UnknownClass, UnknownLayer, UnknownModel, WeightsError
from scorecam_cli.layers import LayerRef, default_layer, layer_shape, parse_layer, trace_layers
from scorecam_cli.models import EMBEDDED_MODEL, available_models, load_model, parse_class


def test_available_models_lists_torchvision_and_embedded():
    names = available_models()
    assert {"resnet18", "resnet50", "vgg16", EMBEDDED_MODEL} <= set(names)
    assert available_models("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert "wide_resnet101_2" in available_models("resnet1")


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModel, match="closest: resnet50"):
        load_model("resnet05", "none")


def test_missing_named_weights_name_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as caught:
        load_model("resnet50", "DEFAULT")
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in message
    assert "--weights PATH" in message


def test_unknown_weights_name_lists_valid_ones():
    with pytest.raises(WeightsError, match="IMAGENET1K_V2"):
        load_model("resnet50", "IMAGENET9K")


def test_weights_path_round_trip(tmp_path):
    torch.manual_seed(0)
    source = load_model("resnet18", "none")
    path = tmp_path / "r18.pth"
    torch.save(source.module.state_dict(), path)
    loaded = load_model("resnet18", str(path))
    for name, tensor in source.module.state_dict().items():
        assert torch.equal(tensor, loaded.module.state_dict()[name])
    assert loaded.categories is not None and loaded.categories[281] == "tabby"


def test_weights_path_that_does_not_fit_is_one_line(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"nothing": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="does not fit"):
        load_model("resnet18", str(path))


def test_embedded_model_loads_offline_without_printing(capsys):
    loaded = load_model(EMBEDDED_MODEL)
    assert capsys.readouterr().out == ""
    assert not loaded.module.training
    assert loaded.categories is not None and len(loaded.categories) == 1000
    assert loaded.preprocessing.input_size == (224, 224)


def test_embedded_default_layer_is_the_head_activation():
    loaded = load_model(EMBEDDED_MODEL)
    info = default_layer(loaded.module, (224, 224))
    assert info.ref == LayerRef("_swish", 1)
    assert info.shape == (1, 1280, 7, 7)


def test_resnet_default_layer_is_layer4():
    info = default_layer(load_model("resnet18", "none").module, (64, 64))
    assert info.ref == LayerRef("layer4")
    assert info.shape == (1, 512, 2, 2)


def test_custom_factory_and_call_indices():
    loaded = load_model("tinymodels:tiny", "none")
    assert loaded.categories is None
    calls = [str(info.ref) for info in trace_layers(loaded.module, (64, 64))]
    assert calls[:2] == ["conv1", "relu"]
    with pytest.raises(UnknownModel, match="cannot import"):
        load_model("tinymodels:nothing")


def test_parse_layer_with_and_without_call():
    model = load_model("resnet18", "none").module
    assert parse_layer(model, "layer4.1.conv2") == LayerRef("layer4.1.conv2")
    assert parse_layer(model, "layer4.1.relu:1") == LayerRef("layer4.1.relu", 1)
    with pytest.raises(UnknownLayer, match="closest: layer4"):
        parse_layer(model, "layer5")


def test_layer_that_is_no_map_is_rejected():
    model = load_model("resnet18", "none").module
    with pytest.raises(UnknownLayer, match="cannot read as maps"):
        layer_shape(model, LayerRef("fc"), (64, 64))


def test_parse_class_by_index_and_name():
    categories = load_model(EMBEDDED_MODEL).categories
    assert parse_class("281", categories) == 281
    assert parse_class("Tabby", categories) == 281
    with pytest.raises(UnknownClass, match="closest"):
        parse_class("tabbby", categories)


def test_packaged_imagenet_names_equal_torchvisions():
    from torchvision.models import ResNet50_Weights

    from scorecam_cli.models import imagenet_categories

    assert imagenet_categories() == list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
