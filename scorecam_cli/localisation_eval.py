"""``scorecam eval --boxes``'s library half: stream inputs -> each method's maps of every box
class of an image, at the image's original size -> the localisation metrics of
:mod:`scorecam_cli.localisation`, every map from the one :class:`~scorecam_cli.explainer.Explainer`.

An image is judged on the classes its boxes name (not its top-1): one map per image and box
class, all of an image's classes from the same passes. Maps are upsampled from the layer to the
decoded image's size as the overlays and ``.npy`` maps are (bilinear, half-pixel centres), so
that they meet the boxes in the file's pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from scorecam_cli.boxes import Box, BoxSet, by_class, fit_boxes, read_boxes
from scorecam_cli.cam import CamConfig, upsample_maps
from scorecam_cli.choices import GRADIENT_METHODS
from scorecam_cli.events import NOT_FINITE, Event, Explained, Failure, Skipped
from scorecam_cli.explainer import Explainer
from scorecam_cli.heads import Head
from scorecam_cli.images import InputImage, LoadedImage
from scorecam_cli.localisation import (
    Localisation,
    LocalisationScores,
    box_mask,
    localisation_scores,
    summarise,
)
from scorecam_cli.stages import decoded_batches, model_failure
from scorecam_cli.writing import DecodeOptions


@dataclass(frozen=True)
class LocalisationReport:
    """Localisation of one method's maps: ``images`` inputs scored, one map per box class."""

    method: str
    localisation: Localisation
    images: int


@dataclass(frozen=True)
class _Target:
    """One map to score: the row of its image in the batch, its class, and its box mask (H0,
    W0) bool at the image's original size."""

    row: int
    class_index: int
    mask: Tensor


def model_boxes(path: str | Path, explainer: Explainer) -> BoxSet:
    """The box file ``path`` read with the model's class names and explainable classes (a
    one-logit binary model has two); BadBoxFile when it cannot be read at all."""
    model = explainer.model
    classes = None
    if model.num_classes is not None:
        classes = Head.of(explainer.config.head, model.num_classes).classes
    return read_boxes(path, model.categories, classes)


def matched_keys(
    inputs: Iterable[InputImage], boxes: BoxSet, used: set[str]
) -> Iterator[InputImage]:
    """``inputs`` unchanged; the box keys they match are added to ``used`` on the way (before a
    shard filters them, so boxes of other shards' images count as matched)."""
    for item in inputs:
        key = boxes.lookup(item.relative, item.path)
        if key is not None:
            used.add(key)
        yield item


def evaluate_localisation(
    explainer: Explainer,
    configs: Sequence[CamConfig],
    inputs: Iterable[InputImage],
    boxes: BoxSet,
    *,
    tolerance: float,
    decode: DecodeOptions,
    on_event: Callable[[Event], None],
    on_warning: Callable[[str], None],
) -> list[LocalisationReport]:
    """Each method's pointing game (within ``tolerance`` px), energy-based pointing game and box
    area share over every input that has boxes; [] when none was scored.

    ``on_event`` hears of every input (Explained with no records, Failure, or Skipped for an
    image without boxes); ``on_warning`` gets one line per image without boxes and per box
    clipped or dropped (:func:`~scorecam_cli.boxes.fit_boxes`).
    """
    for config in configs:
        if config.method in GRADIENT_METHODS:
            explainer.model.torch_module(config.method)  # UnsupportedModel for an ONNX file
    scores: dict[str, list[LocalisationScores]] = {c.method: [] for c in configs}
    images = 0
    for failures, good, batch in decoded_batches(explainer, inputs, decode):
        for failure in failures:
            on_event(failure)
        if batch is None:
            continue
        targets = _targets(good, boxes, on_warning)  # per image: its maps to score
        rows = [n for n, image_targets in enumerate(targets) if image_targets]
        for n, item in enumerate(good):
            if not targets[n]:
                on_event(Skipped(str(item.input.path)))
        if not rows:
            continue
        chosen = [targets[n] for n in rows]
        try:
            measured, finite = _measure(explainer, configs, batch[rows], chosen, tolerance)
        except Exception as exc:  # the model failed on this batch: its inputs fail, one line each
            reason = model_failure(exc)
            for n in rows:
                on_event(Failure(str(good[n].input.path), reason))
            continue
        for method, part in measured.items():
            if part is not None:
                scores[method].append(part)
        images += int(finite.sum())
        for n, ok in zip(rows, finite.tolist(), strict=True):
            path = str(good[n].input.path)
            on_event(
                Explained(path, [], good[n].original_size) if ok else Failure(path, NOT_FINITE)
            )
    if not images:
        return []
    return [LocalisationReport(c.method, summarise(scores[c.method]), images) for c in configs]


def _targets(
    good: Sequence[LoadedImage], boxes: BoxSet, on_warning: Callable[[str], None]
) -> list[list[_Target]]:
    """Per decoded image: one target per class of its boxes (clipped to the image), or none
    (after one warning) when the file has no box for it or none is left inside it."""
    found: list[list[_Target]] = []
    for row, item in enumerate(good):
        name = str(item.input.path)
        key = boxes.lookup(item.input.relative, item.input.path)
        if key is None:
            on_warning(f"{name}: no boxes in {boxes.source}; not scored")
            found.append([])
            continue
        kept, warnings = fit_boxes(boxes.boxes[key], item.original_size, name)
        for line in warnings:  # a box dropped says so: an image left without any is not scored
            on_warning(line)
        found.append(
            [
                _Target(row, index, _mask(group, item.original_size))
                for index, group in by_class(kept).items()
            ]
        )
    return found


def _mask(boxes: Sequence[Box], size: tuple[int, int]) -> Tensor:
    """(H0, W0) bool: the union of ``boxes`` over an image of ``size``."""
    return box_mask(torch.tensor([box.coords for box in boxes], dtype=torch.float64), size)


def _measure(
    explainer: Explainer,
    configs: Sequence[CamConfig],
    batch: Tensor,
    targets: Sequence[Sequence[_Target]],
    tolerance: float,
) -> tuple[dict[str, LocalisationScores | None], Tensor]:
    """Each method's scores of the images ``batch`` (N, 3, H, W) against their ``targets`` (per
    image, at least one), over the images whose logits and maps are all finite; and which
    images those are (N,) bool."""
    images = batch.to(explainer.device)
    most = max(len(t) for t in targets)
    classes = torch.tensor(  # (N, T): an image's classes, padded with its first (not scored)
        [[t.class_index for t in ts] + [ts[0].class_index] * (most - len(ts)) for ts in targets],
        device=explainer.device,
    )
    finite = torch.ones(len(targets), dtype=torch.bool)
    per_method: dict[str, list[Tensor]] = {}
    for config in configs:
        result = explainer.explain(images, config, classes)
        finite &= torch.isfinite(result.probabilities.float().cpu()).all(dim=1)
        maps = []
        for n, image_targets in enumerate(targets):
            height, width = (int(side) for side in image_targets[0].mask.shape)
            layer_maps = result.maps[n : n + 1, : len(image_targets)]  # (1, T, h, w)
            cams = upsample_maps(layer_maps, (height, width))[0]  # (T, H0, W0)
            finite[n] &= bool(torch.isfinite(cams).all())
            maps.append(cams.cpu())
        per_method[config.method] = maps
    measured: dict[str, LocalisationScores | None] = {}
    for method, maps in per_method.items():
        parts = [
            localisation_scores(cams, torch.stack([t.mask for t in ts]), tolerance)
            for cams, ts, ok in zip(maps, targets, finite.tolist(), strict=True)
            if ok
        ]
        measured[method] = _concat(parts) if parts else None
    return measured, finite


def _concat(parts: Sequence[LocalisationScores]) -> LocalisationScores:
    """The per-map values of several images as one (M,) set."""
    return LocalisationScores(
        hits=torch.cat([p.hits for p in parts]),
        energy=torch.cat([p.energy for p in parts]),
        area=torch.cat([p.area for p in parts]),
    )
