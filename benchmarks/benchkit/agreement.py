"""Map agreement: every map upsampled to the input size, min-max normalised, then compared."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from benchkit.cases import Case, layer_activations, log

from scorecam_cli.cam import normalise_maps, upsample_maps


def to_input_size(raw: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False) upsampling of a map (h, w) to ``size``, then min-max."""
    raw = torch.as_tensor(raw).float().cpu()[None, None]  # (1, 1, h, w)
    if tuple(raw.shape[-2:]) != tuple(size):
        raw = upsample_maps(raw, size)
    return normalise_maps(raw)[0, 0].numpy()


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    a, b = ours.ravel().astype(np.float64), theirs.ravel().astype(np.float64)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {"pearson": corr, "max_abs_diff": float(np.abs(a - b).max())}


def convention_map(case: Case, convention: str, batch_size: int) -> torch.Tensor:
    """Score-CAM map (h, w) with the masks built the way one implementation builds them.

    ``ours``: upsample (bilinear, align_corners=False), then min-max per channel;
    ``grad-cam``: upsample with ``nn.UpsamplingBilinear2d`` (align_corners=True), then min-max;
    ``torchcam``: min-max at the layer's resolution, then upsample (align_corners=False).
    Softmax weighting over the raw target logits in all three. Used by --explain-agreement to
    tell which difference in mask building explains a map disagreement.
    """
    size = tuple(case.images.shape[-2:])
    acts = layer_activations(case)[0]  # (K, h, w)

    def minmax(x: torch.Tensor) -> torch.Tensor:  # per channel of (B, 1, *, *)
        low = x.amin(dim=(2, 3), keepdim=True)
        return (x - low) / (x.amax(dim=(2, 3), keepdim=True) - low + 1e-8)

    scores = []
    with torch.inference_mode():
        for start in range(0, len(acts), batch_size):
            part = acts[start : start + batch_size, None]  # (B, 1, h, w)
            if convention == "torchcam":
                masks = F.interpolate(minmax(part), size=size, mode="bilinear", align_corners=False)
            else:
                corners = convention == "grad-cam"
                masks = minmax(
                    F.interpolate(part, size=size, mode="bilinear", align_corners=corners)
                )
            logits = case.module(case.images * masks)  # (B, C)
            scores.append(logits[:, case.target].float())
    weights = torch.cat(scores).softmax(dim=0)  # (K,)
    return torch.einsum("k,khw->hw", weights, acts).relu()


def explain_agreement(case: Case, ours_map: np.ndarray, peer_maps: dict, batch_size: int) -> dict:
    """Each peer's map versus ours and versus our re-implementation of its mask convention."""
    size = tuple(case.images.shape[-2:])
    out = {}
    for name, peer_map in peer_maps.items():
        log(f"    explain: Score-CAM with {name}'s mask convention")
        redo = to_input_size(convention_map(case, name, batch_size), size)
        out[name] = {
            "convention_vs_peer": agreement(redo, peer_map),
            "convention_vs_ours": agreement(redo, ours_map),
        }
        log(f"    {name}: its convention vs {name}: {out[name]['convention_vs_peer']}")
    return out
