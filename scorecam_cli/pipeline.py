"""Glue: stream inputs -> Score-CAM core -> rendering, one record per written map (no click).

Images are decoded once, in DataLoader workers, explained in batches on the device, and rendered
and written by a background thread while the next batch runs, so the model does not wait on disk
and memory stays bounded by a few batches whatever the number of inputs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scorecam_cli import render
from scorecam_cli.cam import CamConfig, CamResult, ScoreBatch, compute_cams
from scorecam_cli.errors import ScoreCamError
from scorecam_cli.images import DEFAULT_LIMITS, InputImage, Limits, LoadedImage, load_batches
from scorecam_cli.layers import LayerRef
from scorecam_cli.manifest import MANIFEST_NAME, ManifestWriter, entry_from_record
from scorecam_cli.models import LoadedModel
from scorecam_cli.npy_maps import stored_map
from scorecam_cli.outputs import OutputIndex

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
    manifest_name: str = MANIFEST_NAME  # under output_dir; every written map gets a line
    npy_size: str = "original"  # original | input | layer: see scorecam_cli.npy_maps
    npy_dtype: str = "float32"  # float32 | float16
    limits: Limits = DEFAULT_LIMITS  # file size, pixels per image and per batch
    fail_fast: bool = False  # stop taking new inputs after the first failure


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
    original_size: tuple[int, int] = (0, 0)  # (H, W) of the decoded input


@dataclass(frozen=True)
class Failure:
    """An input that produced no maps, and why (one line)."""

    input: str
    reason: str
    forward_passes: int = 0  # masked passes run for it before it failed (a write failed)
    forward_passes_saved: int = 0


@dataclass(frozen=True)
class Skipped:
    """An input whose outputs already exist (``skip_existing``)."""

    input: str


Event = Explained | Failure | Skipped


@dataclass
class StopRequest:
    """Ends a run early when ``requested``. ``computing`` is true while a KeyboardInterrupt loses
    nothing (a batch is being explained): a SIGINT handler may raise one only then."""

    requested: bool = False
    computing: bool = False


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

    def settings(self) -> dict[str, object]:
        """How the maps were made, beyond what each record says (for the manifest)."""
        return {
            "weights": self.model.weights,
            "input_size": list(self.size),
            "weighting": self.config.weighting,
            "precision": self.config.precision,
            "classes": list(self.classes) if self.classes else None,
            "top_k": self.top_k,
        }

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


def output_paths(stem: Path, class_index: int, method: str = "scorecam") -> dict[str, Path]:
    """The overlay, heatmap and npy paths of one map: ``<stem>.c<class>[.<method>].npy`` and so on.

    Exact Score-CAM, the default, keeps the short names; other methods add theirs, so runs of
    several methods into one folder sit side by side.
    """
    suffix = "" if method == "scorecam" else f".{method}"
    base = f"{stem.name}.c{class_index}{suffix}"
    return {
        "overlay": stem.with_name(f"{base}.overlay.png"),
        "heatmap": stem.with_name(f"{base}.heatmap.png"),
        "npy": stem.with_name(f"{base}.npy"),
    }


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
    result = explainer.explain(batch)
    maps = result.maps.cpu().numpy()  # (N, T, h, w)
    classes = result.classes.cpu().tolist()
    probabilities = result.probabilities.cpu().tolist()
    passes = result.image_passes.cpu().tolist()
    saved = result.image_passes_saved.cpu().tolist()
    finite = finite_rows(maps, np.asarray(probabilities, dtype=np.float64))  # (N,)
    return [
        _write_image(
            item, maps[n], classes[n], probabilities[n], (passes[n], saved[n]), explainer, options
        )
        if finite[n]
        else Failure(str(item.input.path), NOT_FINITE)
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
    maps = result.maps.cpu().numpy()  # (N, T, h, w): one transfer per batch
    classes = result.classes.cpu().tolist()
    probabilities = result.probabilities.cpu().tolist()
    passes = result.image_passes.cpu().tolist()
    saved = result.image_passes_saved.cpu().tolist()
    finite = finite_rows(maps, np.asarray(probabilities, dtype=np.float64))  # (N,)
    events = events + [
        Failure(str(item.input.path), NOT_FINITE) for n, item in enumerate(good) if not finite[n]
    ]
    futures = [
        writer.submit(
            _write_and_record,
            manifest,
            item,
            maps[n],
            classes[n],
            probabilities[n],
            (passes[n], saved[n]),
            explainer,
            options,
        )
        for n, item in enumerate(good)
        if finite[n]
    ]
    return events, futures


NOT_FINITE = "the model gave NaN or infinite scores or maps for this input; nothing written"


def finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """(N,) bool: rows whose values are all finite in every array (each (N, ...))."""
    rows = np.ones(len(arrays[0]), dtype=bool)
    for array in arrays:
        rows &= np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    return rows


def _collect(entry: tuple[list[Event], list[Future[Event]]]) -> Iterator[Event]:
    events, futures = entry
    yield from events
    for future in futures:
        yield future.result()


def _write_and_record(
    manifest: tuple[ManifestWriter, dict[str, object]],
    item: LoadedImage,
    maps: np.ndarray,
    classes: list[int],
    probabilities: list[float],
    passes: tuple[int, int],
    explainer: Explainer,
    options: RunOptions,
) -> Event:
    """``_write_image`` on the writer thread, each map's manifest line appended just before its
    ``.npy`` (written last): a killed run never leaves an ``.npy`` without its line."""
    writer, settings = manifest

    def append(record: MapRecord) -> None:
        entry = entry_from_record(asdict(record), options.output_dir, item.original_size, settings)
        writer.append(entry)

    return _write_image(item, maps, classes, probabilities, passes, explainer, options, append)


def _write_image(
    item: LoadedImage,
    maps: np.ndarray,
    classes: list[int],
    probabilities: list[float],
    passes: tuple[int, int],
    explainer: Explainer,
    options: RunOptions,
    on_record: Callable[[MapRecord], None] = lambda record: None,
) -> Event:
    """Render and write every map (T, h, w) of one image; a failure becomes a Failure event.

    Per map: the overlay (and heatmap), then ``on_record`` (the manifest line), then the ``.npy``
    last, so an existing ``.npy`` means a finished, listed map.
    """
    source = item.input
    try:
        assert item.pixels is not None, "only decoded images are written"
        image = item.pixels.numpy()  # (H, W, 3) uint8 RGB
        stem = output_stem(options, source)
        stem.parent.mkdir(parents=True, exist_ok=True)
        records: list[MapRecord] = []
        for cam, class_index, probability in zip(maps, classes, probabilities, strict=True):
            paths = output_paths(stem, class_index, explainer.config.method)
            full = render.resize_map(cam, image.shape[:2])  # (H, W) raw float32
            heat = render.heatmap(render.normalise(full), options.colormap)
            stored = stored_map(cam, full, explainer.size, options.npy_size, options.npy_dtype)
            if options.save_heatmap:
                render.write_png(paths["heatmap"], heat)
            render.write_png(paths["overlay"], render.overlay(image, heat, options.alpha))
            record = MapRecord(
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
            on_record(record)
            render.write_npy(paths["npy"], stored)
            records.append(record)
        return Explained(str(source.path), records, item.original_size)
    except (ScoreCamError, OSError, ValueError) as exc:
        return Failure(str(source.path), str(exc), passes[0], passes[1])
