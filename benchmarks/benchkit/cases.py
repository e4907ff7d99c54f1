"""Benchmark cases: a model, the layer every tool explains, an image at an input size."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from benchkit.vit_case import TOKEN_MODELS, build_vit, check_grid_tap
from torch import nn

from scorecam_cli.cam import is_constant
from scorecam_cli.devices import prepare_model
from scorecam_cli.images import preprocess, read_image
from scorecam_cli.layers import capture, default_layer, parse_layer
from scorecam_cli.models import load_model

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "sample_images"
RESULTS = ROOT / "benchmarks" / "results"
ALL_MODELS = ("efficientnet_lite0", "resnet18", "resnet50")
LAYERS = {"resnet18": "layer4", "resnet50": "layer4"}  # others: the model's default layer
QUICK_SIZES = {"efficientnet_lite0": 224, "resnet18": 96}  # quick mode: what fits in minutes
QUICK_MODELS = ("efficientnet_lite0", "resnet18")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class HeadExposed(nn.Module):
    """EfficientNet-Lite0 with its head activation as a module of its own, ``head_act``.

    The original runs ``self._swish`` twice (stem and head); this wrapper runs the same modules in
    the same order, with a copy of ``_swish`` at the head, so any tool's hook on ``head_act`` sees
    exactly the head activation (``_swish:1`` of the original) once per forward pass.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head_act = copy.deepcopy(net._swish)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(inputs)))
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / len(net._blocks)
            x = block(x, drop_connect_rate=rate)
        x = self.head_act(net._bn1(net._conv_head(x)))  # (N, 1280, h, w)
        x = net._avg_pooling(x).flatten(1)  # (N, 1280)
        return net._fc(net._dropout(x))  # (N, C)


@dataclass
class Case:
    """One benchmark case: a model, the layer every tool explains, an image at an input size."""

    model_name: str
    image: Path
    size: int
    module: nn.Module = field(repr=False)
    layer: str  # a module name of ``module`` that runs once per forward pass
    layer_label: str  # how scorecam-cli names the same layer on the unwrapped model
    images: torch.Tensor = field(repr=False)  # (1, 3, H, W) normalised, on the device
    target: int = -1  # top-1 class of the plain model

    @property
    def name(self) -> str:
        return f"{self.model_name}@{self.size} {self.image.name}"

    def record(self, channels: int, nonconstant: int) -> dict[str, Any]:
        """What every result of this case starts with: model, layer, image, size, class and
        the layer's ``channels``, ``nonconstant`` of them needing a pass."""
        return {
            "model": self.model_name,
            "layer": self.layer_label,
            "image": self.image.name,
            "input_size": self.size,
            "target_class": self.target,
            "channels": channels,
            "nonconstant_channels": nonconstant,
        }


def build_model(
    name: str, device: torch.device, input_size: int = 224
) -> tuple[nn.Module, str, str, Any]:
    """(module on device, layer name in it, layer label, preprocessing) for one model name."""
    if name in TOKEN_MODELS:  # random init, the default layer tapped (benchkit/vit_case.py)
        module, layer, label, prep = build_vit(name, (input_size, input_size))
        return prepare_model(module, device), layer, label, prep
    if name in LAYERS:
        torch.manual_seed(0)
        loaded = load_model(name, weights="none")
        layer = LAYERS[name]
        return prepare_model(loaded.module, device), layer, layer, loaded.preprocessing
    loaded = load_model(name)
    module = prepare_model(loaded.module, device)
    if name != "efficientnet_lite0":
        size = loaded.preprocessing.input_size
        ref = default_layer(module, size).ref
        if ref.call is not None:
            raise SystemExit(f"{name}: default layer {ref} runs more than once; not supported here")
        return module, ref.name, str(ref), loaded.preprocessing
    wrapped = prepare_model(HeadExposed(module), device)
    return wrapped, "head_act", "_swish:1", loaded.preprocessing


def check_wrapper(case: Case) -> None:
    """The wrapper must give the original's logits and its ``_swish:1`` activation, exactly (a
    ViT's grid tap: its tokens and scorecam-cli's view of them)."""
    tapped = check_grid_tap(case.module, case.layer, case.images)
    if tapped is not None:
        log(f"  {tapped}")
    if not isinstance(case.module, HeadExposed):
        return
    original = case.module.net
    with torch.inference_mode():
        with capture(original, parse_layer(original, "_swish:1")) as seen_a:
            logits_a = original(case.images)
        with capture(case.module, parse_layer(case.module, "head_act")) as seen_b:
            logits_b = case.module(case.images)
    diff_logits = float((logits_a - logits_b).abs().max())
    diff_acts = float((seen_a.value() - seen_b.value()).abs().max())
    if diff_logits > 0 or diff_acts > 0:
        raise SystemExit(f"wrapper differs from the model: logits {diff_logits}, acts {diff_acts}")
    log(
        "  wrapper check: head_act == _swish:1 and logits identical "
        f"(shape {tuple(seen_b.value().shape)})"
    )


def prepare_case(
    model_name: str, image: Path, size: int, device: torch.device, cache: dict[str, Any]
) -> Case:
    if model_name not in cache:
        cache.clear()  # one model in memory at a time
        cache[model_name] = build_model(model_name, device, size)
    module, layer, label, prep = cache[model_name]
    rgb = read_image(image)
    array = preprocess(rgb, (size, size), prep.mean, prep.std)  # (3, H, W)
    images = torch.from_numpy(array)[None].to(device)  # (1, 3, H, W)
    case = Case(model_name, image, size, module, layer, label, images)
    with torch.inference_mode():
        case.target = int(module(images).argmax(dim=1)[0])
    return case


def layer_activations(case: Case) -> torch.Tensor:
    """The case's layer activations A (1, K, h, w), float32, from one plain forward pass."""
    with torch.inference_mode(), capture(case.module, parse_layer(case.module, case.layer)) as seen:
        case.module(case.images)
    return seen.value().float()


def nonconstant_channels(case: Case) -> tuple[int, int]:
    """(K, K'): channels of the layer, and those the core does not treat as constant
    (not :func:`scorecam_cli.cam.is_constant`) on this image."""
    acts = layer_activations(case).flatten(2)  # (1, K, h*w)
    varying = ~is_constant(acts.amin(dim=2), acts.amax(dim=2))  # (1, K)
    return int(acts.shape[1]), int(varying.sum())
