"""The write stage of a run: where and how maps are written, and the event each input ends in.

Per map, the overlay (and heatmap) PNG, then the manifest line, then the ``.npy`` last, each file
written atomically: an existing ``.npy`` means a finished, listed map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scorecam_cli import render
from scorecam_cli.aspect import input_size_of
from scorecam_cli.confined import make_folder
from scorecam_cli.errors import ScoreCamError
from scorecam_cli.events import NOT_FINITE, Event, Explained, Failure, MapRecord, Skipped
from scorecam_cli.explainer import Explainer
from scorecam_cli.images import DEFAULT_LIMITS, InputImage, Limits, LoadedImage
from scorecam_cli.manifest import MANIFEST_NAME, ManifestWriter, entry_from_record
from scorecam_cli.npy_maps import stored_map
from scorecam_cli.outputs import output_paths

__all__ = [
    "NOT_FINITE",
    "DecodeOptions",
    "Event",
    "Explained",
    "Failure",
    "ImageMaps",
    "ManifestLines",
    "MapRecord",
    "RunOptions",
    "Skipped",
    "finite_rows",
    "output_stem",
    "write_image",
]


@dataclass(frozen=True)
class DecodeOptions:
    """How inputs are decoded: images per batch, decoding processes, file and pixel limits."""

    images_per_batch: int = 8
    workers: int = 1
    limits: Limits = DEFAULT_LIMITS


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

    @property
    def decode(self) -> DecodeOptions:
        return DecodeOptions(self.images_per_batch, self.workers, self.limits)


@dataclass(frozen=True)
class ImageMaps:
    """One decoded image's maps, ready to write: maps (T, h, w) with their classes and
    probabilities (T each), and the masked passes run and saved for the image."""

    item: LoadedImage
    maps: np.ndarray
    classes: list[int]
    probabilities: list[float]
    passes: tuple[int, int]


@dataclass(frozen=True)
class ManifestLines:
    """Where a run lists its maps: the manifest's writer and the settings every line carries."""

    writer: ManifestWriter
    settings: dict[str, object]


def output_stem(options: RunOptions, item: InputImage) -> Path:
    """Outputs of ``item`` are ``<stem>.c<class>.overlay.png`` and so on: input name kept whole."""
    return options.output_dir / item.relative.parent / item.relative.name


def finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """(N,) bool: rows whose values are all finite in every array (each (N, ...))."""
    rows = np.ones(len(arrays[0]), dtype=bool)
    for array in arrays:
        rows &= np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    return rows


def write_image(
    image_maps: ImageMaps,
    explainer: Explainer,
    options: RunOptions,
    manifest: ManifestLines | None = None,
) -> Event:
    """Render and write every map of one image; a failure becomes a Failure event.

    Per map: the overlay (and heatmap), then its line in ``manifest`` when given, then the
    ``.npy`` last: an existing ``.npy`` means a finished, listed map, and a killed run never
    leaves an ``.npy`` without its line.
    """
    item, maps, passes = image_maps.item, image_maps.maps, image_maps.passes
    classes, probabilities = image_maps.classes, image_maps.probabilities
    source = item.input
    try:
        assert item.pixels is not None, "only decoded images are written"
        image = item.pixels.numpy()  # (H, W, 3) uint8 RGB
        stem = output_stem(options, source)
        make_folder(options.output_dir, stem.parent)  # never through a symlink planted in OUT
        records: list[MapRecord] = []
        for cam, class_index, probability in zip(maps, classes, probabilities, strict=True):
            paths = output_paths(stem, class_index, explainer.config.method)
            full = render.resize_map(cam, image.shape[:2])  # (H, W) raw float32
            heat = render.heatmap(render.normalise(full), options.colormap)
            seen = input_size_of(item, explainer.size)  # --keep-aspect: the image's own
            stored = stored_map(cam, full, seen, options.npy_size, options.npy_dtype)
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
            if manifest is not None:
                entry = entry_from_record(
                    asdict(record), options.output_dir, item.original_size, manifest.settings
                )
                manifest.writer.append(entry)
            render.write_npy(paths["npy"], stored)
            records.append(record)
        return Explained(str(source.path), records, item.original_size)
    except (ScoreCamError, OSError, ValueError) as exc:
        return Failure(str(source.path), str(exc), passes[0], passes[1])
