"""Small WebP copies of overlays and inputs for the report, made with OpenCV.

Sources are read as ``run`` reads its inputs: regular files only, under the same size and
pixel limits, decoded from bytes read here.

A thumbnail takes its source's modification time, so a rebuild reuses every thumbnail whose
source is unchanged (same mtime) and remakes the others. Writes are atomic (hidden temporary file,
then rename), so a killed build never leaves half an image behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scorecam_cli.confined import make_folder
from scorecam_cli.errors import ImageRead, OutputWrite
from scorecam_cli.file_limits import DEFAULT_LIMITS, Limits, image_bytes
from scorecam_cli.render import write_atomic

THUMB_SUFFIX = ".webp"
QUALITY = 80  # WebP quality, 0-100


@dataclass
class ThumbnailStats:
    """What a batch of thumbnail jobs did; ``failed`` maps a target to a one-line reason."""

    written: int = 0
    reused: int = 0
    failed: dict[Path, str] = field(default_factory=dict)


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` (H, W, 3) scaled so its longer side is at most ``max_side`` (never enlarged)."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # (w, h) for OpenCV
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def is_current(source: Path, target: Path) -> bool:
    """True when ``target`` was made from ``source`` as it is now (same modification time)."""
    try:
        return target.stat().st_mtime_ns == source.stat().st_mtime_ns
    except OSError:
        return False


def read_colour(source: Path, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """(H, W, 3) uint8 BGR of an image file, under the limits ``run`` applies to its inputs (a
    regular file, its size, its header's pixel count), decoded from bytes read here: OpenCV
    never opens the path itself (a name that is not UTF-8 crashes ``cv2.imread``)."""
    data = image_bytes(source, limits)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise ImageRead(f"{source}: OpenCV could not decode it")
    if image.shape[0] * image.shape[1] > limits.max_pixels:  # a format without a header we read
        raise ImageRead(f"{source}: over the limit of {limits.max_pixels:,} pixels (--max-pixels)")
    return np.asarray(image)


def write_thumbnail(
    source: Path, target: Path, max_side: int, limits: Limits = DEFAULT_LIMITS
) -> bool:
    """Write ``target`` from ``source`` unless it is current; True when it was (re)written.

    Raises ImageRead when ``source`` cannot be read under ``limits`` or decoded, OutputWrite when
    ``target`` cannot be written.
    """
    if is_current(source, target):
        return False
    image = read_colour(source, limits)  # (H, W, 3) BGR
    ok, encoded = cv2.imencode(
        THUMB_SUFFIX, shrink(image, max_side), [cv2.IMWRITE_WEBP_QUALITY, QUALITY]
    )
    if not ok:
        raise OutputWrite(f"{target}: OpenCV could not encode a WebP thumbnail")
    write_atomic(target, encoded.tobytes(), source.stat().st_mtime_ns)
    return True


def write_thumbnails(
    jobs: Sequence[tuple[Path, Path]],
    max_side: int,
    base: Path,
    limits: Limits = DEFAULT_LIMITS,
) -> ThumbnailStats:
    """Make every ``(source, target)`` thumbnail, on a few threads (OpenCV releases the GIL);
    the targets' folders are made below ``base`` only through real folders, never a symlink."""
    stats = ThumbnailStats()

    def one(job: tuple[Path, Path]) -> tuple[Path, bool | str]:
        source, target = job
        try:
            make_folder(base, target.parent)
            return target, write_thumbnail(source, target, max_side, limits)
        except (ImageRead, OutputWrite) as exc:
            return target, str(exc)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for target, outcome in pool.map(one, jobs):
            if isinstance(outcome, str):
                stats.failed[target] = outcome
            elif outcome:
                stats.written += 1
            else:
                stats.reused += 1
    return stats
