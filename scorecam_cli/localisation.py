"""Does the map point at the object? Localisation metrics against boxes (torch only).

Every metric takes saliency maps S (N, H, W) at the original images' size (e.g.
``upsample_maps(result.maps, (H, W))[:, t]``) and box masks B (N, H, W) bool: the union of the
boxes of the class each map explains (:func:`box_mask`). A box ``x0, y0, x1, y1`` (pixels, x1 and
y1 exclusive, any float) covers the pixels whose centre ``(x + 0.5, y + 0.5)`` lies inside it, so
an integer box covers columns ``x0 ... x1 - 1`` and rows ``y0 ... y1 - 1``.

- **Pointing game** (Zhang et al. 2016, "Top-down neural attention by excitation backprop"): a
  hit when the map's maximum lies within ``tolerance`` pixels (15 by default, Euclidean distance
  between pixel indices) of a pixel of B; ``tolerance=0`` asks for the maximum inside a box.
  The maximum is the first maximal pixel in row-major order; a constant map (no maximum) is a
  miss. The hit rate is the mean of the hits. Higher is better.
- **Energy-based pointing game** (Score-CAM, Wang et al. 2020, section 5.2): the share of the
  min-max normalised map's energy inside the boxes, ``sum(E * B) / sum(E)`` with ``E = (S -
  min S) / (max S - min S)``; a constant map has no energy and scores 0. Higher is better.
- **Box area share**: ``sum(B) / (H * W)``, the fraction of the image the boxes cover: the
  energy share of a uniform map, and so the chance level both metrics are read against.

Per-image values stay per image (:class:`LocalisationScores`) so that a caller can stream images
and average at the end (:func:`summarise`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from scorecam_cli.cam import is_constant, normalise_maps

DEFAULT_TOLERANCE = 15  # pixels: the pointing game's usual tolerance (Zhang et al. 2016)


@dataclass(frozen=True, eq=False)
class LocalisationScores:
    """Per-image localisation of N maps: hits (N,) bool, energy (N,) and area (N,) float."""

    hits: Tensor
    energy: Tensor
    area: Tensor

    @property
    def images(self) -> int:
        return int(self.hits.shape[0])


@dataclass(frozen=True)
class Localisation:
    """Means over ``images`` maps; see the module docstring for the exact definitions."""

    pointing_game: float  # hit rate in [0, 1], higher is better
    energy_pointing_game: float  # mean energy share in [0, 1], higher is better
    box_area_share: float  # mean area share in [0, 1]: the chance level
    images: int


def box_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) bool: the union of boxes (B, 4) ``x0, y0, x1, y1`` over an image of ``size``.

    A pixel belongs to a box when its centre lies inside it (x0 <= x + 0.5 < x1, the same for
    y); parts of a box outside the image are ignored. No boxes give an all-False mask.
    """
    height, width = size
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (B, 4), not {tuple(boxes.shape)}")
    centres_y = torch.arange(height, device=boxes.device, dtype=torch.float64) + 0.5  # (H,)
    centres_x = torch.arange(width, device=boxes.device, dtype=torch.float64) + 0.5  # (W,)
    coords = boxes.double()
    x0, y0, x1, y1 = (coords[:, i, None] for i in range(4))  # (B, 1) each
    inside_y = (y0 <= centres_y) & (centres_y < y1)  # (B, H)
    inside_x = (x0 <= centres_x) & (centres_x < x1)  # (B, W)
    return (inside_y[:, :, None] & inside_x[:, None, :]).any(dim=0)  # (H, W)


def pointing_game(maps: Tensor, masks: Tensor, tolerance: float = DEFAULT_TOLERANCE) -> Tensor:
    """Hits (N,) bool: each map's maximum within ``tolerance`` pixels of its mask (N, H, W)."""
    _check(maps, masks)
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError("the tolerance must be a finite number of pixels, at least 0")
    _, height, width = maps.shape
    flat = maps.flatten(1).float()  # (N, H*W)
    peak = flat.argmax(dim=1)  # (N,): the first maximal pixel
    peak_y, peak_x = (peak // width)[:, None, None], (peak % width)[:, None, None]  # (N, 1, 1)
    rows = torch.arange(height, device=maps.device)[:, None]  # (H, 1)
    cols = torch.arange(width, device=maps.device)[None, :]  # (1, W)
    squared = (rows - peak_y) ** 2 + (cols - peak_x) ** 2  # (N, H, W) from each peak
    nearest = squared.masked_fill(~masks, torch.iinfo(squared.dtype).max).amin(dim=(1, 2))  # (N,)
    touched = nearest.double() <= tolerance**2
    constant = is_constant(flat.amin(dim=1), flat.amax(dim=1))
    return touched & ~constant


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Energy shares (N,) in [0, 1]: ``sum(E * B) / sum(E)``, E the min-max normalised map."""
    _check(maps, masks)
    energy = normalise_maps(maps)  # (N, H, W), zeros for a constant map
    total = energy.sum(dim=(1, 2), dtype=torch.float64)
    inside = (energy * masks).sum(dim=(1, 2), dtype=torch.float64)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), 0.0).float()


def box_area_share(masks: Tensor) -> Tensor:
    """Area shares (N,) in [0, 1]: the fraction of each (H, W) mask's pixels that are boxed."""
    if masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be (N, H, W) bool, not {tuple(masks.shape)} {masks.dtype}")
    return masks.float().mean(dim=(1, 2))


def localisation_scores(
    maps: Tensor, masks: Tensor, tolerance: float = DEFAULT_TOLERANCE
) -> LocalisationScores:
    """All three per-image values of maps (N, H, W) against box masks (N, H, W)."""
    return LocalisationScores(
        hits=pointing_game(maps, masks, tolerance),
        energy=energy_pointing_game(maps, masks),
        area=box_area_share(masks),
    )


def summarise(batches: Iterable[LocalisationScores]) -> Localisation:
    """Means over all maps of all batches (each map counts once)."""
    parts = list(batches)
    if sum(part.images for part in parts) == 0:
        raise ValueError("no maps to summarise")

    def mean(values: Iterable[Tensor]) -> float:
        return float(torch.cat([v.detach().double().cpu() for v in values]).mean())

    return Localisation(
        pointing_game=mean(p.hits for p in parts),
        energy_pointing_game=mean(p.energy for p in parts),
        box_area_share=mean(p.area for p in parts),
        images=sum(part.images for part in parts),
    )


def _check(maps: Tensor, masks: Tensor) -> None:
    """Maps (N, H, W) finite, masks the same shape, bool, each with at least one boxed pixel."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), not {tuple(maps.shape)}")
    if masks.shape != maps.shape or masks.dtype != torch.bool:
        raise ValueError(
            f"masks {tuple(masks.shape)} {masks.dtype} do not fit maps {tuple(maps.shape)}: "
            "they must be bool of the same shape"
        )
    if maps.shape[0] == 0:
        raise ValueError("no maps to score")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("maps hold NaN or infinite values")
    if not bool(masks.flatten(1).any(dim=1).all()):
        raise ValueError("every map needs at least one boxed pixel (a box of its class)")
