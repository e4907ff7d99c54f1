"""Small WebP copies of overlays and inputs for the report, made with OpenCV.

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

from scorecam_cli.errors import ImageRead, OutputWrite
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


def write_thumbnail(source: Path, target: Path, max_side: int) -> bool:
    """Write ``target`` from ``source`` unless it is current; True when it was (re)written.

    Raises ImageRead when ``source`` cannot be decoded, OutputWrite when ``target`` cannot be
    written.
    """
    if is_current(source, target):
        return False
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)  # (H, W, 3) BGR
    if image is None:
        raise ImageRead(f"{source}: OpenCV could not decode it")
    ok, encoded = cv2.imencode(
        THUMB_SUFFIX, shrink(image, max_side), [cv2.IMWRITE_WEBP_QUALITY, QUALITY]
    )
    if not ok:
        raise OutputWrite(f"{target}: OpenCV could not encode a WebP thumbnail")
    write_atomic(target, encoded.tobytes(), source.stat().st_mtime_ns)
    return True


def write_thumbnails(jobs: Sequence[tuple[Path, Path]], max_side: int) -> ThumbnailStats:
    """Make every ``(source, target)`` thumbnail, on a few threads (OpenCV releases the GIL)."""
    stats = ThumbnailStats()

    def one(job: tuple[Path, Path]) -> tuple[Path, bool | str]:
        source, target = job
        try:
            return target, write_thumbnail(source, target, max_side)
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
