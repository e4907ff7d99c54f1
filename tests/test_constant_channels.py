"""The constant-channel test is relative: activations scaled by 1e-9 give equal maps and passes."""

from __future__ import annotations

import copy

import torch

from scorecam_cli.cam import CamConfig, compute_cams, is_constant, normalise_maps


def scaled(model: torch.nn.Module, factor: float) -> torch.nn.Module:
    """TinyNet whose target layer ``relu`` outputs ``factor`` times the original (ReLU is
    positively homogeneous) and whose next conv undoes it: the same logits."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.conv1.weight *= factor
        twin.conv1.bias *= factor
        twin.conv2.weight /= factor
    return twin


def test_tiny_activations_give_equal_maps_and_pass_counts(tiny_net, tiny_images):
    small = scaled(tiny_net, 1e-9)
    config = CamConfig(batch_size=7)
    base = compute_cams(tiny_net, "relu", tiny_images, config=config)
    tiny = compute_cams(small, "relu", tiny_images, config=config)
    assert base.forward_passes > 1
    assert tiny.forward_passes == base.forward_passes
    assert torch.equal(tiny.image_passes, base.image_passes)
    assert torch.equal(tiny.classes, base.classes)
    torch.testing.assert_close(tiny.maps * 1e9, base.maps, rtol=1e-3, atol=1e-5)


def test_constant_means_relative_or_exactly_zero_range():
    low = torch.tensor([0.0, 1e-12, 1.0, -3e-9, 5.0])
    high = torch.tensor([0.0, 2e-12, 1.0 + 1e-9, -1e-9, 5.0])
    assert is_constant(low, high).tolist() == [True, False, True, False, True]


def test_normalised_masks_of_tiny_maps_are_not_blank():
    maps = torch.arange(16.0).view(1, 1, 4, 4) * 1e-12
    normalised = normalise_maps(maps)
    assert normalised.max() == 1 and normalised.min() == 0
