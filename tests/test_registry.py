"""Every torchvision classifier, random init: the default layer is a map of the backbone's last
stage (no patch embedding, no pooling, no head) and its Grad-CAM map varies in both directions."""

from __future__ import annotations

import pytest
import torch
import torchvision

from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.layers import pick_default, trace_layers
from scorecam_cli.models import load_model

NAMES = torchvision.models.list_models(module=torchvision.models)
# The smallest input each family takes with a last stage of at least 2 x 2: fixed-size
# transformers take only their native 224; inception_v3 needs 75 and is 1 x 1 below 107;
# every other CNN stays >= 2 x 2 at 64.
SMALLEST = {"inception_v3": 107}


def smallest_size(name: str, native: tuple[int, int]) -> tuple[int, int]:
    if name.startswith(("vit_", "maxvit")):
        return native
    side = SMALLEST.get(name, 64)
    return side, side


def fill_zero_heads(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim > 1 and not param.any():  # zero-initialised heads (ViT): no signal
                param.normal_(0, 0.02)
    return module


def test_registry_is_covered():
    assert len(NAMES) > 70 and "vit_b_16" in NAMES and "swin_v2_t" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_default_layer_is_the_last_stage_and_its_map_varies(name):
    torch.manual_seed(0)
    loaded = load_model(name, "none")
    module = fill_zero_heads(loaded.module)
    size = smallest_size(name, loaded.preprocessing.input_size)
    infos = trace_layers(module, size)
    default = pick_default(infos, module)
    assert default.ref.name != "conv_proj" and not default.role
    assert "pool" not in type(dict(module.named_modules())[default.ref.name]).__name__.lower()
    stages = [i.map_shape for i in infos if i.is_map and not i.role and i.ref.name]
    smallest = min(shape[1] * shape[2] for shape in stages if shape)
    assert default.map_shape and default.map_shape[1] * default.map_shape[2] == smallest
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    result = compute_cams(module, default.ref, images, config=CamConfig(method="gradcam"))
    cam = result.maps[0, 0]  # (h, w)
    assert cam.shape == default.map_shape[1:]
    assert (cam[1:] != cam[:-1]).any() and (cam[:, 1:] != cam[:, :-1]).any()
