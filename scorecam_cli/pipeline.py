"""Glue: stream inputs -> Score-CAM core -> rendering, one record per written map (no click).

Images are decoded once, in DataLoader workers, explained in batches on the device, and rendered
and written by a background thread while the next batch runs, so the model does not wait on disk
and memory stays bounded by a few batches whatever the number of inputs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scorecam_cli import render
from scorecam_cli.cam import CamConfig, CamResult, ScoreBatch, compute_cams
from scorecam_cli.errors import ScoreCamError
from scorecam_cli.evaluate import (
    Faithfulness,
    FaithfulnessScores,
    SanityStep,
    cam_explainer,
    faithfulness_scores,
    merge_sanity,
    sanity_check,
    summarise,
)
from scorecam_cli.images import InputImage, LoadedImage, load_batches
from scorecam_cli.layers import LayerRef
from scorecam_cli.models import LoadedModel

log = logging.getLogger("scorecam_cli")


@dataclass(frozen=True)
class RunOptions:
    """Where and how to write: outputs mirror each input's relative path under ``output_dir``."""

    output_dir: Path
    colormap: str = "jet"
    alpha: float = 0.5
    save_heatmap: bool = False
    skip_existing: bool = False
    overwrite: bool = False
    images_per_batch: int = 8
    workers: int = 1


@dataclass(frozen=True)
class MapRecord:
    """One written map: the files and what they explain."""

    input: str
    overlay: str
    npy: str
    heatmap: str | None
    class_index: int
    class_name: str | None
    probability: float
    model: str
    layer: str
    method: str
    forward_passes: int
    forward_passes_saved: int


@dataclass(frozen=True)
class Explained:
    """An input whose maps were all written: one record per target class."""

    input: str
    records: list[MapRecord]


@dataclass(frozen=True)
class Failure:
    """An input that produced no maps, and why (one line)."""

    input: str
    reason: str


@dataclass(frozen=True)
class Skipped:
    """An input whose outputs already exist (``skip_existing``)."""

    input: str


Event = Explained | Failure | Skipped


@dataclass(frozen=True)
class Explainer:
    """A model ready on its device, the layer to explain, and how."""

    model: LoadedModel
    layer: LayerRef
    device: torch.device
    config: CamConfig
    classes: Sequence[int] | None = None
    top_k: int = 1
    input_size: tuple[int, int] | None = None
    score_batch: ScoreBatch | None = None  # runs the masked passes (a backend); None: the model

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size or self.model.preprocessing.input_size

    @property
    def targets_per_image(self) -> int:
        return len(self.classes) if self.classes else self.top_k

    def explain(self, batch: torch.Tensor) -> CamResult:
        """Maps of preprocessed images (N, 3, H, W) on the CPU."""
        images = batch.to(self.device, non_blocking=True)
        return compute_cams(
            self.model.module,
            self.layer,
            images,
            self.classes,
            self.top_k,
            self.config,
            score_batch=self.score_batch,
        )


def output_stem(options: RunOptions, item: InputImage) -> Path:
    """Outputs of ``item`` are ``<stem>.c<class>.overlay.png`` and so on: input name kept whole."""
    return options.output_dir / item.relative.parent / item.relative.name


def output_paths(stem: Path, class_index: int) -> dict[str, Path]:
    """The overlay, heatmap and npy paths of one map."""
    base = f"{stem.name}.c{class_index}"
    return {
        "overlay": stem.with_name(f"{base}.overlay.png"),
        "heatmap": stem.with_name(f"{base}.heatmap.png"),
        "npy": stem.with_name(f"{base}.npy"),
    }


def run(explainer: Explainer, inputs: Iterable[InputImage], options: RunOptions) -> Iterator[Event]:
    """Explain every input and write its outputs: one event per input, in input order.

    A bad input becomes a Failure event, never an exception, so the run goes on with the others.
    """
    accepted = _accepted_inputs(inputs, options, explainer.targets_per_image)
    pending: deque[tuple[list[Event], list[Future[Event]]]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorecam-writer") as writer:
        try:
            for batch in _batches(accepted, explainer, options):
                pending.append(_submit(batch, explainer, options, writer))
                while len(pending) > 1:  # keep one batch rendering while the next computes
                    yield from _collect(pending.popleft())
            while pending:
                yield from _collect(pending.popleft())
        finally:
            for _, futures in pending:
                for future in futures:
                    future.cancel()


def _accepted_inputs(
    inputs: Iterable[InputImage], options: RunOptions, targets: int
) -> Iterator[InputImage | Event]:
    """Inputs to explain, or an event for those that need no work or cannot be written."""
    seen: set[Path] = set()
    out_root = options.output_dir.resolve()
    for item in inputs:
        if _inside(item.path, out_root):
            continue  # our own outputs, found again by a folder walk
        stem = output_stem(options, item)
        if stem in seen:
            yield Failure(
                str(item.path), f"its outputs would collide with another input's ({stem})"
            )
            continue
        seen.add(stem)
        existing = sorted(stem.parent.glob(f"{_glob_escape(stem.name)}.c*.npy"))
        if existing and options.skip_existing and len(existing) >= targets:
            yield Skipped(str(item.path))
        elif existing and not options.overwrite:
            yield Failure(
                str(item.path),
                f"outputs exist ({existing[0]}); use --overwrite or --skip-existing",
            )
        else:
            yield item


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _decoded_batches(
    explainer: Explainer, inputs: Iterable[InputImage], options: RunOptions
) -> Iterator[tuple[list[Failure], list[LoadedImage], torch.Tensor | None]]:
    """Per batch: the inputs that failed to decode, those that did, and their images
    (N, 3, H, W) on the CPU (None when none decoded)."""
    prep = explainer.model.preprocessing
    for loaded in load_batches(
        inputs, explainer.size, prep.mean, prep.std, options.images_per_batch, options.workers
    ):
        failures = [Failure(str(i.input.path), i.error) for i in loaded if i.error is not None]
        good = [item for item in loaded if item.tensor is not None]
        tensors = [item.tensor for item in good if item.tensor is not None]  # (3, H, W) each
        yield failures, good, torch.stack(tensors) if tensors else None


def _batches(
    accepted: Iterator[InputImage | Event], explainer: Explainer, options: RunOptions
) -> Iterator[tuple[list[Event], list[LoadedImage], CamResult | None]]:
    """Batches of decoded images with their maps; events for inputs that were not decoded."""
    early: list[Event] = []

    def images() -> Iterator[InputImage]:
        for item in accepted:
            if isinstance(item, InputImage):
                yield item
            else:
                early.append(item)

    for failures, good, batch in _decoded_batches(explainer, images(), options):
        events: list[Event] = [*early, *failures]
        early.clear()
        yield events, good, explainer.explain(batch) if batch is not None else None
    if early:
        yield list(early), [], None


def _submit(
    batch: tuple[list[Event], list[LoadedImage], CamResult | None],
    explainer: Explainer,
    options: RunOptions,
    writer: ThreadPoolExecutor,
) -> tuple[list[Event], list[Future[Event]]]:
    events, good, result = batch
    if result is None:
        return events, []
    maps = result.maps.cpu().numpy()  # (N, T, h, w): one transfer per batch
    classes = result.classes.cpu().tolist()
    probabilities = result.probabilities.cpu().tolist()
    passes = result.image_passes.cpu().tolist()
    saved = result.image_passes_saved.cpu().tolist()
    futures = [
        writer.submit(
            _write_image,
            item,
            maps[n],
            classes[n],
            probabilities[n],
            (passes[n], saved[n]),
            explainer,
            options,
        )
        for n, item in enumerate(good)
    ]
    return events, futures


def _collect(entry: tuple[list[Event], list[Future[Event]]]) -> Iterator[Event]:
    events, futures = entry
    yield from events
    for future in futures:
        yield future.result()


def _write_image(
    item: LoadedImage,
    maps: np.ndarray,
    classes: list[int],
    probabilities: list[float],
    passes: tuple[int, int],
    explainer: Explainer,
    options: RunOptions,
) -> Event:
    """Render and write every map (T, h, w) of one image; a failure becomes a Failure event."""
    source = item.input
    try:
        assert item.pixels is not None, "only decoded images are written"
        image = item.pixels.numpy()  # (H, W, 3) uint8 RGB
        stem = output_stem(options, source)
        stem.parent.mkdir(parents=True, exist_ok=True)
        records: list[MapRecord] = []
        for cam, class_index, probability in zip(maps, classes, probabilities, strict=True):
            paths = output_paths(stem, class_index)
            full = render.resize_map(cam, image.shape[:2])  # (H, W) raw float32
            heat = render.heatmap(render.normalise(full), options.colormap)
            render.write_npy(paths["npy"], full.astype(np.float32))
            if options.save_heatmap:
                render.write_png(paths["heatmap"], heat)
            render.write_png(paths["overlay"], render.overlay(image, heat, options.alpha))
            records.append(
                MapRecord(
                    input=str(source.path),
                    overlay=str(paths["overlay"]),
                    npy=str(paths["npy"]),
                    heatmap=str(paths["heatmap"]) if options.save_heatmap else None,
                    class_index=class_index,
                    class_name=explainer.model.class_name(class_index),
                    probability=round(float(probability), 6),
                    model=explainer.model.name,
                    layer=str(explainer.layer),
                    method=explainer.config.method,
                    forward_passes=passes[0],
                    forward_passes_saved=passes[1],
                )
            )
        return Explained(str(source.path), records)
    except (ScoreCamError, OSError, ValueError) as exc:
        return Failure(str(source.path), str(exc))


@dataclass(frozen=True)
class MethodReport:
    """Faithfulness of one method over every input, and its sanity check when asked for."""

    method: str
    faithfulness: Faithfulness
    sanity: list[SanityStep] | None


def evaluate(
    explainer: Explainer,
    configs: Sequence[CamConfig],
    inputs: Iterable[InputImage],
    *,
    steps: int,
    sanity: bool,
    options: RunOptions,
    on_event: Callable[[Event], None],
) -> list[MethodReport]:
    """Measure each method's maps on every input (see :mod:`scorecam_cli.evaluate`).

    The target of each image is the explainer's first class, or its top-1 class. ``on_event``
    hears of every input as it is done (Explained with no records, or Failure).
    """
    scores: dict[str, list[FaithfulnessScores]] = {c.method: [] for c in configs}
    checks: dict[str, list[list[SanityStep]]] = {c.method: [] for c in configs}
    model = explainer.model.module
    for failures, good, batch in _decoded_batches(explainer, inputs, options):
        for failure in failures:
            on_event(failure)
        if batch is None:
            continue
        images = batch.to(explainer.device)  # (N, 3, H, W)
        targets = _eval_targets(explainer, images)  # (N,)
        for config in configs:
            backend = (model, explainer.score_batch) if explainer.score_batch else None
            explain = cam_explainer(explainer.layer, targets, config, backend)
            saliency = explain(model, images)  # (N, H, W)
            scores[config.method].append(
                faithfulness_scores(
                    model,
                    images,
                    saliency,
                    targets,
                    steps=steps,
                    batch_size=config.batch_size,
                    precision=config.precision,
                )
            )
            if sanity:
                checks[config.method].append(sanity_check(model, images, explain))
        for item in good:
            on_event(Explained(str(item.input.path), []))
    if not any(scores.values()):
        return []
    return [
        MethodReport(
            c.method,
            summarise(scores[c.method]),
            merge_sanity(checks[c.method]) if sanity else None,
        )
        for c in configs
    ]


def _eval_targets(explainer: Explainer, images: torch.Tensor) -> torch.Tensor:
    """The class each image is judged on (N,): the first --class, or the model's top-1."""
    if explainer.classes:
        return torch.full((len(images),), explainer.classes[0], device=images.device)
    with torch.inference_mode():
        return explainer.model.module(images).argmax(dim=1)
