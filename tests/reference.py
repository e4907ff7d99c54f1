"""A slow, obviously correct Score-CAM: one image and one channel at a time, in float64."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def reference_scorecam(
    model: nn.Module,
    layer: str,
    image: torch.Tensor,
    target: int,
    weighting: str = "softmax",
    view: Callable[[torch.Tensor], torch.Tensor] = lambda out: out,
) -> torch.Tensor:
    """Score-CAM map (h, w) of one image (3, H, W) for class ``target``, straight from the paper.

    ``view`` turns the layer's output into (1, K, h, w) (a layout transform; default: as it is).
    """
    model = copy.deepcopy(model).double().eval()
    x = image.double()[None]  # (1, 3, H, W)
    store: list[torch.Tensor] = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: store.append(view(out).detach().clone())
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
        constant = span <= 1e-6 * max(up.min().abs(), up.max().abs())  # relative, as the core
        mask = torch.zeros_like(up) if constant else (up - up.min()) / span
        with torch.no_grad():
            logits = model(x * mask)[0]  # (C,)
        scores.append(logits[target] if weighting == "softmax" else logits.softmax(0)[target])
    score = torch.stack(scores)  # (K,)
    weights = score.softmax(0) if weighting == "softmax" else score
    return torch.relu((weights[:, None, None] * acts).sum(0))
