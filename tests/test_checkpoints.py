"""Checkpoints of registry architectures: every wrapper and prefix form, head and stem sizes read
from the checkpoint, and one-line refusals (random init, seeded, small models)."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from click.testing import CliRunner
from safetensors.torch import save_file
from test_cli import write_image
from torch import nn

from scorecam_cli.cli import main
from scorecam_cli.errors import CheckpointMismatch, WeightsError
from scorecam_cli.models import EMBEDDED_MODEL, load_model, load_state_dict_file

TORCHVISION = "shufflenet_v2_x0_5"  # 1.4M parameters; head fc, stem conv1.0
TIMM = "test_resnet"  # timm's 0.5M-parameter test model


def source_model(name: str, classes: int, channels: int = 3) -> nn.Module:
    """A randomly initialised model as a training script would have it."""
    torch.manual_seed(0)
    if name.startswith("timm:"):
        model: nn.Module = timm.create_model(
            name.removeprefix("timm:"), num_classes=classes, in_chans=channels
        )
        return model
    model = torchvision.models.get_model(name, weights=None, num_classes=classes)
    if channels != 3:
        stem = model.conv1[0]  # shufflenet's first convolution
        model.conv1[0] = nn.Conv2d(channels, stem.out_channels, 3, 2, 1, bias=False)
    return model


def save_form(state: dict[str, torch.Tensor], form: str, folder: Path) -> Path:
    """``state`` saved the way ``form``'s training code saves it."""
    prefixed = {
        "dataparallel": "module.",
        "compiled": "_orig_mod.",
        "dataparallel-compiled": "module._orig_mod.",
    }
    if form == "safetensors":
        path = folder / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    if form in prefixed:
        saved: object = {prefixed[form] + k: v for k, v in state.items()}
    elif form == "lightning":
        lightning = {f"model.{k}": v for k, v in state.items()}
        saved = {"state_dict": lightning, "hyper_parameters": {"lr": 0.1}, "epoch": 3}
    elif form == "ema":  # timm's train.py: both; the EMA weights are the ones to explain
        zeros = {k: torch.zeros_like(v) for k, v in state.items()}
        saved = {"state_dict": zeros, "state_dict_ema": state, "epoch": 9}
    elif form in ("model_state_dict", "model"):
        saved = {form: state, "optimizer_state_dict": {}, "epoch": 1}
    else:
        saved = state
    path = folder / f"{form}.pth"
    torch.save(saved, path)
    return path


FORMS = [
    "plain",
    "dataparallel",
    "lightning",
    "compiled",
    "dataparallel-compiled",
    "model_state_dict",
    "model",
    "ema",
    "safetensors",
]


def logits_width(module: nn.Module, channels: int = 3) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, channels, 64, 64)).shape[1])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("name", "classes"), [(TORCHVISION, 5), (f"timm:{TIMM}", 4)])
def test_each_checkpoint_form_loads_with_the_head_size(tmp_path, name, classes, form):
    source = source_model(name, classes)
    path = save_form(source.state_dict(), form, tmp_path)
    loaded = load_model(name, str(path))
    assert logits_width(loaded.module) == classes
    for key, tensor in source.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], tensor), key
    assert loaded.categories is None  # fine-tuned: never the ImageNet names
    assert loaded.preprocessing.channels == 3


@pytest.mark.parametrize("name", [TORCHVISION, f"timm:{TIMM}"])
def test_a_one_channel_stem_makes_a_grayscale_model(tmp_path, name):
    source = source_model(name, 1, channels=1)
    path = save_form(source.state_dict(), "plain", tmp_path)
    loaded = load_model(name, str(path))
    assert loaded.preprocessing.channels == 1 and len(loaded.preprocessing.std) == 1
    assert logits_width(loaded.module, channels=1) == 1
    expected = source.state_dict()
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in expected.items())


def test_a_convolution_head_is_found_by_rule(tmp_path):
    source = source_model("squeezenet1_1", 7)  # classifier.1 is a 1x1 Conv2d (7, 512, 1, 1)
    loaded = load_model("squeezenet1_1", str(save_form(source.state_dict(), "plain", tmp_path)))
    assert logits_width(loaded.module) == 7


def test_the_embedded_model_fine_tuned(tmp_path):
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    source = EfficientNet.from_name("efficientnet-lite0", num_classes=3)
    loaded = load_model(EMBEDDED_MODEL, str(save_form(source.state_dict(), "lightning", tmp_path)))
    assert logits_width(loaded.module) == 3 and loaded.categories is None


def test_a_1000_class_checkpoint_keeps_the_imagenet_names(tmp_path):
    source = source_model(TORCHVISION, 1000)
    loaded = load_model(TORCHVISION, str(save_form(source.state_dict(), "compiled", tmp_path)))
    assert loaded.categories is not None and loaded.categories[281] == "tabby"


def run_cli(tmp_path: Path, *args: str):
    image = write_image(tmp_path / "x.png")
    out = tmp_path / "out"
    return CliRunner().invoke(main, ["run", str(image), "-o", str(out), "--workers", "0", *args])


def test_a_checkpoint_that_fits_nothing_is_one_line_exit_2(tmp_path):
    state = source_model(TORCHVISION, 7).state_dict()
    state["fc.weight"] = torch.zeros(7, 99)  # a head that reads 99 features
    torch.save(state, tmp_path / "bad.pth")
    result = run_cli(tmp_path, "--model", TORCHVISION, "--weights", str(tmp_path / "bad.pth"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "fc.weight is (7, 99) in the checkpoint, (7, 1024) in the model" in lines[0]
    assert "built with 7 classes" in lines[0] and "Traceback" not in result.output


def test_another_architecture_is_one_line_exit_2(tmp_path):
    torch.save(source_model(f"timm:{TIMM}", 4).state_dict(), tmp_path / "other.pth")
    result = run_cli(tmp_path, "--model", TORCHVISION, "--weights", str(tmp_path / "other.pth"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing key(s)" in lines[0] and "unexpected key(s)" in lines[0]


def test_wrappers_are_said_on_stderr(tmp_path):
    state = source_model(f"timm:{TIMM}", 4).state_dict()
    path = save_form(state, "ema", tmp_path)
    args = ["--model", f"timm:{TIMM}", "--weights", str(path), "--input-size", "64"]
    result = run_cli(tmp_path, *args, "--backend", "torch")
    assert result.exit_code == 0, result.output
    assert "took the state dict under 'state_dict_ema' (also there: state_dict)" in result.stderr
    assert "built timm:test_resnet with 4 classes" in result.stderr


class Holder(nn.Module):
    """A model whose own submodule is named ``model``: that prefix must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


def test_model_prefix_is_stripped_only_when_every_key_has_it(tmp_path):
    torch.manual_seed(0)
    source = Holder()
    torch.save(source.state_dict(), tmp_path / "own.pth")
    target = Holder()
    load_state_dict_file(target, str(tmp_path / "own.pth"))
    assert torch.equal(target.model.weight, source.model.weight)
    inner = {k.replace("model.", "model._orig_mod."): v for k, v in source.state_dict().items()}
    torch.save(inner, tmp_path / "inner.pth")  # a compiled submodule
    load_state_dict_file(target, str(tmp_path / "inner.pth"))


def test_refusals_are_one_line(tmp_path):
    model = nn.Linear(2, 2)
    torch.save({"weight": torch.zeros(2, 2), "bias": [0.0, 1.0]}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match=r"'bias' holds a list, not a tensor") as odd:
        load_state_dict_file(model, str(tmp_path / "odd.pth"))
    assert "\n" not in str(odd.value)
    wrapped = {"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}
    torch.save(wrapped, tmp_path / "args.pth", pickle_module=pickle)
    with pytest.raises(WeightsError, match="refused: it holds Python objects"):
        load_state_dict_file(model, str(tmp_path / "args.pth"))
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_state_dict_file(model, str(tmp_path / "bad.safetensors"))
    torch.save({"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointMismatch, match=r"weight is \(3, 2\) in the checkpoint, \(2, 2\)"):
        load_state_dict_file(model, str(tmp_path / "shape.pth"))
    fifo = tmp_path / "fifo.pth"
    import os

    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match="not a regular file"):
        load_state_dict_file(model, str(fifo))


def test_models_lists_the_architectures_a_checkpoint_fits(tmp_path):
    path = save_form(source_model(TORCHVISION, 5, channels=1).state_dict(), "lightning", tmp_path)
    result = CliRunner().invoke(main, ["models", "shufflenet", "--weights", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [TORCHVISION]
    assert f"{TORCHVISION}: fits" in result.stderr and "5 classes, 1 input channel" in result.stderr


def test_layers_describes_what_was_inferred(tmp_path):
    path = save_form(source_model(TORCHVISION, 1, channels=1).state_dict(), "plain", tmp_path)
    args = ["layers", TORCHVISION, "--weights", str(path), "--input-size", "64"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "conv5\t1024x2x2\tnchw\tdefault" in result.stdout.splitlines()
    said = result.stderr
    assert "2 classes" in said and "1 input channel (grayscale)" in said
    assert "head sigmoid (binary: class 0 negative, class 1 positive)" in said


@pytest.mark.parametrize(
    "name", ["vgg11", "googlenet", "mobilenet_v3_small", "convnext_tiny", "vit_b_16", "swin_t"]
)
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_head_and_stem_are_found_in_every_family(name):
    """On the meta device (shapes only): a 7-class, 1-channel checkpoint of each family."""
    from scorecam_cli.models.checkpoints import fit_of, replace_stem
    from scorecam_cli.models.torchvision_source import fitted_builder

    with torch.device("meta"):
        source = torchvision.models.get_model(name, weights=None, num_classes=7)
        stem = next(k for k, m in source.named_modules() if isinstance(m, nn.Conv2d))
        replace_stem(source, stem, 1)
    fit = fit_of(fitted_builder(name), source.state_dict())
    assert fit is not None and (fit.num_classes, fit.in_chans, fit.stem) == (7, 1, stem)
