"""timm models as a source (the 'timm' extra, installed by make install): random init."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.cli import main
from scorecam_cli.layers import resolve_layer
from scorecam_cli.layouts import NCHW, NHWC, TOKENS
from scorecam_cli.models import available_models, load_model

CASES = [
    ("resnet18", NCHW, "layer4"),
    ("vit_tiny_patch16_224", TOKENS, "blocks.11.norm1"),
    ("swin_tiny_patch4_window7_224", NHWC, "norm"),
    ("convnext_atto", NCHW, "stages"),
]


@pytest.mark.parametrize(("name", "kind", "default"), CASES)
def test_timm_models_load_and_explain(name, kind, default):
    torch.manual_seed(0)
    loaded = load_model(f"timm:{name}", "none")
    assert loaded.name == f"timm:{name}"
    assert loaded.preprocessing.input_size == (224, 224)
    info = resolve_layer(loaded.module, None, loaded.preprocessing.input_size)
    assert str(info.ref) == default and info.layout is not None and info.layout.kind == kind
    assert (info.map_shape is not None and info.map_shape[1:] == (7, 7)) or kind == TOKENS
    if kind == TOKENS:
        assert info.layout.prefix == 1 and info.map_shape[1:] == (14, 14)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    result = compute_cams(loaded.module, info.ref, images, config=CamConfig(method="gradcam"))
    cam = result.maps[0, 0]
    assert cam.shape == info.map_shape[1:] and torch.isfinite(cam).all()


def test_timm_names_are_listed():
    names = available_models("timm:convnext_at*")
    assert "timm:convnext_atto" in names and all(n.startswith("timm:convnext_at") for n in names)


def test_missing_timm_weights_name_the_cache_and_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    result = CliRunner().invoke(main, ["run", "x.png", "--model", "timm:resnet18"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "timm/resnet18" in lines[0] and str(tmp_path / "hub") in lines[0]
    assert "--weights PATH or --weights none" in lines[0]


def test_unknown_timm_model_is_a_usage_error():
    result = CliRunner().invoke(main, ["layers", "timm:resnet1"])
    assert result.exit_code == 2 and "timm:resnet18" in result.stderr


def test_default_weights_come_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """A cache laid out as huggingface_hub keeps it: refs/main names the snapshot."""
    import huggingface_hub.constants as constants
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("resnet18", pretrained=False)
    repo = source.pretrained_cfg["hf_hub_id"]  # timm/resnet18.a1_in1k
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_model("timm:resnet18", "DEFAULT")
    assert (
        loaded.weights.startswith("DEFAULT")
        and loaded.categories
        and len(loaded.categories) == 1000
    )
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(images), source.eval()(images))


def test_models_command_lists_timm_names():
    result = CliRunner().invoke(main, ["models", "timm:convnext_at*"])
    assert result.exit_code == 0 and "timm:convnext_atto" in result.stdout.split()
