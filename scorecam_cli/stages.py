"""The stages every engine (and ``eval``) shares: which inputs need work, decoded batches,
explaining and writing a batch, and the run's settings for the manifest (no click)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scorecam_cli.aspect import grouped_inputs, same_size_groups
from scorecam_cli.cam import CamResult
from scorecam_cli.errors import ScoreCamError, first_line
from scorecam_cli.events import NOT_FINITE, Event, Failure, Skipped
from scorecam_cli.explainer import Explainer
from scorecam_cli.images import InputImage, LoadedImage, load_batches
from scorecam_cli.outputs import OutputIndex
from scorecam_cli.writing import (
    DecodeOptions,
    ImageMaps,
    RunOptions,
    finite_rows,
    output_stem,
    write_image,
)

log = logging.getLogger("scorecam_cli")


@dataclass
class StopRequest:
    """Ends a run early when ``requested``. ``computing`` is true while a KeyboardInterrupt loses
    nothing (a batch is being decoded or explained, or a Ray driver waits for results): a SIGINT
    handler may raise one only then, never while a map is written or reported."""

    requested: bool = False
    computing: bool = False


def run_settings(explainer: Explainer, options: RunOptions) -> dict[str, object]:
    """The run's settings that every manifest line carries."""
    return {
        **explainer.settings(),
        "colormap": options.colormap,
        "alpha": options.alpha,
        "npy_size": options.npy_size,
        "npy_dtype": options.npy_dtype,
    }


def accepted_inputs(
    inputs: Iterable[InputImage], options: RunOptions, explainer: Explainer
) -> Iterator[InputImage | Event]:
    """Inputs to explain, or an event for those that need no work or cannot be written.

    Our own outputs found again by a folder walk (when OUT is, or holds, an input folder) are
    left out. Existence is decided per map from the exact files it needs, with one scan per
    output folder (see :mod:`scorecam_cli.outputs`).
    """
    seen: set[Path] = set()
    index = OutputIndex(options.output_dir)
    method = explainer.config.method
    classes = list(explainer.classes) if explainer.classes else None
    for item in inputs:
        if item.problem is not None:
            yield Failure(str(item.path), item.problem)
            continue
        if index.is_ours(item.path):
            continue
        stem = output_stem(options, item)
        if stem in seen:
            yield Failure(
                str(item.path), f"its outputs would collide with another input's ({stem})"
            )
            continue
        seen.add(stem)
        heatmap = options.save_heatmap
        if options.skip_existing and index.done(stem, method, classes, explainer.top_k, heatmap):
            yield Skipped(str(item.path))
            continue
        existing = index.conflict(stem, method, classes, heatmap)
        if existing is not None and not (options.overwrite or options.skip_existing):
            yield Failure(
                str(item.path), f"outputs exist ({existing}); use --overwrite or --skip-existing"
            )
        else:
            yield item


def decoded_batches(
    explainer: Explainer, inputs: Iterable[InputImage], decode: DecodeOptions
) -> Iterator[tuple[list[Failure], list[LoadedImage], torch.Tensor | None]]:
    """Per batch: the inputs that failed to decode, those that did, and their images
    (N, 3, H, W) on the CPU (None when none decoded). With ``--keep-aspect`` the inputs are
    grouped by size and every batch holds one size (:mod:`scorecam_cli.aspect`)."""
    prep = explainer.model.preprocessing
    resize = explainer.aspect
    if resize is not None:
        inputs = grouped_inputs(inputs, resize, decode.images_per_batch)
    for loaded in load_batches(
        inputs,
        resize or explainer.size,
        prep.mean,
        prep.std,
        decode.images_per_batch,
        decode.workers,
        decode.limits,
    ):
        for item in loaded:
            if item.warning is not None:
                log.warning("warning: %s", item.warning)
        failures = [Failure(str(i.input.path), i.error) for i in loaded if i.error is not None]
        good = [item for item in loaded if item.tensor is not None]
        for n, group in enumerate(same_size_groups(good) or [[]]):
            tensors = [item.tensor for item in group if item.tensor is not None]  # (3, H, W)
            yield failures if n == 0 else [], group, torch.stack(tensors) if tensors else None


def explain_batch(
    explainer: Explainer, good: list[LoadedImage], batch: torch.Tensor, options: RunOptions
) -> list[Event]:
    """Explain decoded images ``batch`` (N, 3, H, W) and write their maps before returning:
    one event per image of ``good`` (the engines that run batches elsewhere call this)."""
    events: list[Event] = []
    for part, outcome in explain_parts(explainer, good, batch):
        if isinstance(outcome, str):
            events += [Failure(str(item.input.path), outcome) for item in part]
            continue
        events += [
            write_image(maps, explainer, options)
            if maps is not None
            else Failure(str(item.input.path), NOT_FINITE)
            for item, maps in zip(part, per_image(outcome, part), strict=True)
        ]
    return events


def explain_parts(
    explainer: Explainer, good: list[LoadedImage], batch: torch.Tensor
) -> Iterator[tuple[list[LoadedImage], CamResult | str]]:
    """The maps of decoded images ``batch`` (N, 3, H, W) of ``good``, as (images, result).

    When the model fails on the batch (it raises for some batch sizes, returns the wrong number
    of rows, or runs out of memory), each image is explained alone, so that only the images it
    fails on fail: their result is the one-line reason instead.
    """
    try:
        whole: CamResult | str = explainer.explain(batch)
    except Exception as exc:
        whole = model_failure(exc)
    if not isinstance(whole, str) or len(good) == 1:
        yield good, whole
        return
    for n, item in enumerate(good):
        try:
            alone: CamResult | str = explainer.explain(batch[n : n + 1])
        except Exception as exc:
            alone = model_failure(exc)
        yield [item], alone


def model_failure(exc: Exception) -> str:
    """The one-line reason an input failed because explaining it raised ``exc``."""
    if isinstance(exc, ScoreCamError):
        return str(exc)
    return f"explaining it failed: {type(exc).__name__}: {first_line(exc)}"


def per_image(result: CamResult, good: list[LoadedImage]) -> list[ImageMaps | None]:
    """Per image of ``good``: its maps ready to write, or None when its scores or maps are not
    finite. One device-to-host transfer per batch."""
    maps = result.maps.cpu().numpy()  # (N, T, h, w)
    classes = result.classes.cpu().tolist()
    probabilities = result.probabilities.cpu().tolist()
    passes = result.image_passes.cpu().tolist()
    saved = result.image_passes_saved.cpu().tolist()
    finite = finite_rows(maps, np.asarray(probabilities, dtype=np.float64))  # (N,)
    return [
        ImageMaps(item, maps[n], classes[n], probabilities[n], (passes[n], saved[n]))
        if finite[n]
        else None
        for n, item in enumerate(good)
    ]
