"""Glue: stream inputs -> Score-CAM core -> rendering, one record per written map (no click).

Images are decoded once, in DataLoader workers, explained in batches on the device, and rendered
and written by a background thread while the next batch runs, so the model does not wait on disk
and memory stays bounded by a few batches whatever the number of inputs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scorecam_cli.cam import CamResult
from scorecam_cli.explainer import Explainer
from scorecam_cli.images import InputImage, LoadedImage, load_batches
from scorecam_cli.manifest import ManifestWriter
from scorecam_cli.outputs import OutputIndex
from scorecam_cli.writing import (
    NOT_FINITE,
    Event,
    Failure,
    RunOptions,
    Skipped,
    finite_rows,
    output_stem,
    write_image,
)

log = logging.getLogger("scorecam_cli")


@dataclass
class StopRequest:
    """Ends a run early when ``requested``. ``computing`` is true while a KeyboardInterrupt loses
    nothing (a batch is being explained): a SIGINT handler may raise one only then."""

    requested: bool = False
    computing: bool = False


def run(
    explainer: Explainer,
    inputs: Iterable[InputImage],
    options: RunOptions,
    stop: StopRequest | None = None,
) -> Iterator[Event]:
    """Explain every input and write its outputs: one event per input, in input order.

    A bad input becomes a Failure event, never an exception, so the run goes on with the others.
    Every written map gets its manifest line (flushed by the writer thread just before the map's
    ``.npy``, its last file, so a killed run leaves no finished map unlisted) before its event.
    The run ends early when ``stop.requested`` turns true, when a KeyboardInterrupt arrives while
    a batch is explained (``stop.computing``), or after a failure with ``options.fail_fast``:
    then no new batch starts, the maps being written are finished, and every map written is
    still yielded before it returns.
    """
    accepted = _accepted_inputs(inputs, options, explainer)
    pending: deque[tuple[list[Event], list[Future[Event]]]] = deque()
    manifest = ManifestWriter(options.output_dir / options.manifest_name)
    settings = run_settings(explainer, options)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorecam-writer")
    failed = False
    stop = stop or StopRequest()

    def stopping() -> bool:
        return stop.requested or (options.fail_fast and failed)

    with manifest, writer:  # the writer thread finishes its lines before the manifest closes
        batches = _batches(accepted, explainer, options, stop)
        try:
            while not stopping():
                try:
                    batch = next(batches)
                except (StopIteration, KeyboardInterrupt):
                    break
                pending.append(_submit(batch, explainer, options, writer, (manifest, settings)))
                while len(pending) > 1 and not stopping():  # one renders, the next computes
                    for event in _collect(pending.popleft()):
                        failed = failed or isinstance(event, Failure)
                        yield event
        finally:
            batches.close()
        # Stopping or done: finish what the writer started, drop what it did not, report all.
        for events, futures in pending:
            started = [f for f in futures if not (stopping() and f.cancel())]
            yield from _collect((events, started))


def run_settings(explainer: Explainer, options: RunOptions) -> dict[str, object]:
    """The run's settings that every manifest line carries."""
    return {
        **explainer.settings(),
        "colormap": options.colormap,
        "alpha": options.alpha,
        "npy_size": options.npy_size,
        "npy_dtype": options.npy_dtype,
    }


def explain_batch(
    explainer: Explainer, good: list[LoadedImage], batch: torch.Tensor, options: RunOptions
) -> list[Event]:
    """Explain decoded images ``batch`` (N, 3, H, W) and write their maps before returning:
    one event per image of ``good`` (the engines that run batches elsewhere call this)."""
    return [
        write_image(*args, explainer, options)
        if args is not None
        else Failure(str(item.input.path), NOT_FINITE)
        for item, args in zip(good, _per_image(explainer.explain(batch), good), strict=True)
    ]


MapArgs = tuple[LoadedImage, np.ndarray, list[int], list[float], tuple[int, int]]


def _per_image(result: CamResult, good: list[LoadedImage]) -> list[MapArgs | None]:
    """Per image of ``good``: what ``write_image`` needs (its item, maps (T, h, w), classes,
    probabilities and pass counts), or None when its scores or maps are not finite. One
    device-to-host transfer per batch."""
    maps = result.maps.cpu().numpy()  # (N, T, h, w)
    classes = result.classes.cpu().tolist()
    probabilities = result.probabilities.cpu().tolist()
    passes = result.image_passes.cpu().tolist()
    saved = result.image_passes_saved.cpu().tolist()
    finite = finite_rows(maps, np.asarray(probabilities, dtype=np.float64))  # (N,)
    return [
        (item, maps[n], classes[n], probabilities[n], (passes[n], saved[n])) if finite[n] else None
        for n, item in enumerate(good)
    ]


def _accepted_inputs(
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
    explainer: Explainer, inputs: Iterable[InputImage], options: RunOptions
) -> Iterator[tuple[list[Failure], list[LoadedImage], torch.Tensor | None]]:
    """Per batch: the inputs that failed to decode, those that did, and their images
    (N, 3, H, W) on the CPU (None when none decoded)."""
    prep = explainer.model.preprocessing
    for loaded in load_batches(
        inputs,
        explainer.size,
        prep.mean,
        prep.std,
        options.images_per_batch,
        options.workers,
        options.limits,
    ):
        for item in loaded:
            if item.warning is not None:
                log.warning("warning: %s", item.warning)
        failures = [Failure(str(i.input.path), i.error) for i in loaded if i.error is not None]
        good = [item for item in loaded if item.tensor is not None]
        tensors = [item.tensor for item in good if item.tensor is not None]  # (3, H, W) each
        yield failures, good, torch.stack(tensors) if tensors else None


def _batches(
    accepted: Iterator[InputImage | Event],
    explainer: Explainer,
    options: RunOptions,
    stop: StopRequest,
) -> Generator[tuple[list[Event], list[LoadedImage], CamResult | None], None, None]:
    """Batches of decoded images with their maps; events for inputs that were not decoded."""
    early: list[Event] = []

    def images() -> Iterator[InputImage]:
        for item in accepted:
            if isinstance(item, InputImage):
                yield item
            else:
                early.append(item)

    for failures, good, batch in decoded_batches(explainer, images(), options):
        events: list[Event] = [*early, *failures]
        early.clear()
        result = None
        if batch is not None:
            stop.computing = True  # a KeyboardInterrupt here loses nothing: the batch is redone
            try:
                result = explainer.explain(batch)
            finally:
                stop.computing = False
        yield events, good, result
    if early:
        yield list(early), [], None


def _submit(
    batch: tuple[list[Event], list[LoadedImage], CamResult | None],
    explainer: Explainer,
    options: RunOptions,
    writer: ThreadPoolExecutor,
    manifest: tuple[ManifestWriter, dict[str, object]],
) -> tuple[list[Event], list[Future[Event]]]:
    events, good, result = batch
    if result is None:
        return events, []
    per_image = _per_image(result, good)
    events = events + [
        Failure(str(item.input.path), NOT_FINITE)
        for item, args in zip(good, per_image, strict=True)
        if args is None
    ]
    futures = [
        writer.submit(write_image, *args, explainer, options, manifest)
        for args in per_image
        if args is not None
    ]
    return events, futures


def _collect(entry: tuple[list[Event], list[Future[Event]]]) -> Iterator[Event]:
    events, futures = entry
    yield from events
    for future in futures:
        yield future.result()
