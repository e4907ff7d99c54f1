"""A slow, obviously correct Score-CAM: one image and one channel at a time, in float64."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def reference_scorecam(
    model: nn.Module, layer: str, image: torch.Tensor, target: int, weighting: str = "softmax"
) -> torch.Tensor:
    """Score-CAM map (h, w) of one image (3, H, W) for class ``target``, straight from the paper."""
    model = copy.deepcopy(model).double().eval()
    x = image.double()[None]  # (1, 3, H, W)
    store: list[torch.Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: store.append(out.detach().clone())
    )
    with torch.no_grad():
        model(x)
    handle.remove()
    acts = store[-1][0]  # (K, h, w)
    scores = []
    for channel in acts:
        up = F.interpolate(
            channel[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False
        )[0, 0]  # (H, W)
        span = up.max() - up.min()
        mask = (up - up.min()) / span if span > 1e-7 else torch.zeros_like(up)
        with torch.no_grad():
            logits = model(x * mask)[0]  # (C,)
        scores.append(logits[target] if weighting == "softmax" else logits.softmax(0)[target])
    score = torch.stack(scores)  # (K,)
    weights = score.softmax(0) if weighting == "softmax" else score
    return torch.relu((weights[:, None, None] * acts).sum(0))
