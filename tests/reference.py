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
    head: str = "softmax",
) -> torch.Tensor:
    """Score-CAM map (h, w) of one image (C, H, W) for class ``target``, straight from the paper.

    ``view`` turns the layer's output into (1, K, h, w) (a layout transform; default: as it is).
    ``head``: softmax, or sigmoid (each class's probability is the sigmoid of its own score; a
    one-logit model has classes 0 = -logit and 1 = +logit).
    """
    model = copy.deepcopy(model).double().eval()
    x = image.double()[None]  # (1, C, H, W)
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
        if head == "sigmoid" and len(logits) == 1:
            logits = torch.cat([-logits, logits])  # (2,): negative, positive
        if weighting == "softmax":
            scores.append(logits[target])
        elif head == "sigmoid":
            scores.append(torch.sigmoid(logits[target]))
        else:
            scores.append(logits.softmax(0)[target])
    score = torch.stack(scores)  # (K,)
    weights = score.softmax(0) if weighting == "softmax" else score
    return torch.relu((weights[:, None, None] * acts).sum(0))
