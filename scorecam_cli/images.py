"""Find input images (files, folders, stdin lists), decode them with OpenCV, batch them for torch.

Streaming design: the main process enumerates the inputs lazily (a folder walk or stdin lines) and
hands them to a ``DataLoader`` through its batch sampler, which always runs in the main process.
The "indices" it yields are ``(index, InputImage)`` keys, so workers decode exactly the images
they are handed, in input order, and at most ``prefetch_factor * workers`` batches are read ahead.
Workers never read stdin or walk folders themselves, so a ``find ... | scorecam run -`` pipe works.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TextIO

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scorecam_cli.errors import ImageRead

# OpenCV logs its own warnings and errors to stderr; we report failures ourselves, in one line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp"}
    | {".pbm", ".pgm", ".ppm", ".pnm", ".sr", ".ras", ".jp2"}
)

_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class InputImage:
    """An image to explain: where to read it, and the relative path its outputs mirror."""

    path: Path
    relative: Path


@dataclass
class LoadedImage:
    """One decoded input, or the reason it could not be decoded (then ``tensor`` is None)."""

    index: int
    input: InputImage
    tensor: torch.Tensor | None  # (3, H, W) float32, normalised, at the model's input size
    pixels: torch.Tensor | None  # (H0, W0, 3) uint8 RGB as decoded, for rendering
    error: str | None

    @property
    def original_size(self) -> tuple[int, int]:
        """(H0, W0) of the decoded image; (0, 0) on failure."""
        if self.pixels is None:
            return (0, 0)
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


# ---------------------------------------------------------------------------- finding inputs


def find_inputs(specs: Sequence[str], stdin: TextIO | None = None) -> Iterator[InputImage]:
    """Lazily yield the images named by ``specs``: files, folders (recursive), or ``-`` for stdin.

    Named files and paths that do not exist are yielded as they are, so that reading them
    reports the problem. ``stdin`` defaults to ``sys.stdin``.
    """
    for spec in specs:
        if spec == "-":
            yield from _stdin_inputs(stdin if stdin is not None else sys.stdin)
        elif os.path.isdir(spec):
            root = Path(spec)
            for path in _walk(root):
                yield InputImage(path, path.relative_to(root))
        else:
            path = Path(spec)
            yield InputImage(path, Path(path.name))


def _walk(folder: Path) -> Iterator[Path]:
    """Image files below ``folder`` in sorted relative-path order; hidden entries are skipped.

    Symlinked folders are not followed (no loops); symlinked files are.
    """
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        raise ImageRead(f"{folder}: cannot list folder ({error.strerror or error})") from error
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            yield Path(entry.path)


def _stdin_inputs(lines: Iterable[str]) -> Iterator[InputImage]:
    """One input per non-blank line, read lazily; outputs mirror a made-safe form of the path."""
    for line in lines:
        name = line.strip()
        if name:
            yield InputImage(Path(name), _safe_relative(name))


def _safe_relative(name: str) -> Path:
    """A relative path that cannot leave the output folder: ``/a/../b.jpg`` -> ``a/__/b.jpg``."""
    path = PurePath(name)
    parts = path.parts[1:] if path.anchor else path.parts
    safe = ["__" if part == ".." else part for part in parts]
    return Path(*safe) if safe else Path("__")


# ---------------------------------------------------------------------------- decoding


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; raise ImageRead with a one-line reason.

    EXIF orientation is applied, gray is expanded to 3 channels, alpha is composited over white,
    and 16-bit or float images are scaled to 8 bits (value / 257 for 16-bit).
    """
    data = _read_bytes(path)
    problem = _truncation(data)
    if problem is not None:
        raise ImageRead(f"{path}: {problem}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies EXIF orientation but gives 8-bit BGR without alpha (None for float).
    oriented = _decode(buffer, cv2.IMREAD_COLOR)  # (H, W, 3) uint8 BGR
    # IMREAD_UNCHANGED keeps alpha and depth but ignores EXIF orientation (TIFF excepted).
    # JPEG has neither alpha nor 16 bits, so one decode does.
    jpeg = data.startswith(_JPEG_MAGIC)
    raw = oriented if jpeg else _decode(buffer, cv2.IMREAD_UNCHANGED)  # (H, W[, C]), any depth
    if raw is None:
        raise ImageRead(f"{path}: not an image OpenCV can decode")
    if oriented is None or raw.dtype not in (np.uint8, np.uint16):
        return _to_rgb8(raw)  # no comparable 8-bit view to take the orientation from
    if raw.dtype == np.uint8 and (raw.ndim == 2 or raw.shape[2] in (1, 3)):
        return np.ascontiguousarray(oriented[..., ::-1])  # nothing was lost: use the oriented one
    return _to_rgb8(_orient_like(raw, oriented))


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; ImageRead for a missing, unreadable, folder or empty path."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageRead(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageRead(f"{path}: is a folder, not an image file") from None
    except OSError as error:
        raise ImageRead(f"{path}: cannot read ({error.strerror or error})") from None
    if not data:
        raise ImageRead(f"{path}: empty file")
    return data


def _truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG is visibly cut short, else None (checked before OpenCV sees it)."""
    if data.startswith(_JPEG_MAGIC) and not _jpeg_has_end(data):
        return "truncated JPEG (no end-of-image marker)"
    if data.startswith(_PNG_MAGIC) and b"IEND" not in data:
        return "truncated PNG (no IEND chunk)"
    return None


def _jpeg_has_end(data: bytes) -> bool:
    """True when an end-of-image marker (FF D9) follows the first start-of-scan (FF DA).

    Segments before the scan are skipped by their length, so an EXIF thumbnail's own end marker
    does not count; data after the end marker (as in motion photos) is allowed.
    """
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:
            break
        if marker == 0xFF:  # fill byte
            pos += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return data.find(b"\xff\xd9", pos) != -1


def _decode(buffer: np.ndarray, flags: int) -> np.ndarray | None:
    """cv2.imdecode of the file's bytes; None when OpenCV cannot decode them with these flags."""
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error:
        return None
    return None if image is None or image.size == 0 else np.asarray(image)


_FLIPS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda a: a,
    lambda a: np.rot90(a, -1),
    lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 1),
    lambda a: a[:, ::-1],
    lambda a: a[::-1],
    lambda a: np.swapaxes(a, 0, 1),
    lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
)


def _orient_like(raw: np.ndarray, oriented: np.ndarray) -> np.ndarray:
    """Apply to ``raw`` the rotation/flip OpenCV's EXIF handling applied to ``oriented``.

    raw: (h, w[, C]) any depth, unrotated; oriented: (H, W, 3) uint8 BGR of the same file. Of
    the 8 rotations and flips, the one whose colours best match ``oriented`` wins (the identity
    on ties), so we follow whatever orientation OpenCV applied without parsing EXIF ourselves.
    """
    colour = raw if raw.ndim == 2 else raw[..., :3] if raw.shape[2] >= 3 else raw[..., 0]
    proxy = _unit_float(colour) * 255.0  # (h, w[, 3]) float32 on the 8-bit scale
    target = oriented.astype(np.float32) if proxy.ndim == 3 else oriented[..., 0].astype(np.float32)
    best, best_error = raw, np.inf
    for flip in _FLIPS:
        candidate = flip(proxy)
        if candidate.shape != target.shape:
            continue
        error = float(np.abs(candidate - target).mean())
        if error < best_error:
            best, best_error = flip(raw), error
        if best_error <= 1.0:  # 16-bit: OpenCV truncates to 8 bits, we round; 1 level apart
            break
    return np.ascontiguousarray(best)


def _unit_float(image: np.ndarray) -> np.ndarray:
    """Any-depth image -> float32 in [0, 1], same shape (integers scaled by their maximum)."""
    if np.issubdtype(image.dtype, np.integer):
        return np.clip(image.astype(np.float32) / float(np.iinfo(image.dtype).max), 0.0, 1.0)
    return np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)


def _to_rgb8(raw: np.ndarray) -> np.ndarray:
    """(H, W[, C]) gray, gray+alpha, BGR or BGRA of any depth -> (H, W, 3) uint8 RGB.

    Alpha is composited over white; scaling is rounded (a 16-bit value v becomes v / 257).
    """
    unit = _unit_float(raw)
    if unit.ndim == 2:
        unit = unit[..., None]  # (H, W, 1)
    if unit.shape[2] in (2, 4):
        alpha = unit[..., -1:]  # (H, W, 1)
        unit = unit[..., :-1] * alpha + (1.0 - alpha)
    rgb = np.repeat(unit, 3, axis=2) if unit.shape[2] == 1 else unit[..., 2::-1]  # (H, W, 3)
    return np.ascontiguousarray(np.round(rgb * 255.0).astype(np.uint8))


def preprocess(
    image_rgb: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """(h, w, 3) uint8 RGB -> (3, H, W) float32 C-contiguous, for size=(H, W).

    The whole image is resized, never cropped (INTER_AREA when shrinking, INTER_LINEAR otherwise),
    scaled to [0, 1], then normalised per channel: ``(x - mean) / std``.
    """
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values each, got {list(mean)} and {list(std)}")
    height, width = size
    if image_rgb.shape[:2] != (height, width):
        shrinking = height <= image_rgb.shape[0] and width <= image_rgb.shape[1]
        method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image_rgb = np.asarray(cv2.resize(image_rgb, (width, height), interpolation=method))
    scaled = image_rgb.astype(np.float32) / 255.0  # (H, W, 3)
    normed = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normed.transpose(2, 0, 1))  # (3, H, W)


# ---------------------------------------------------------------------------- batching


def load_image(
    index: int,
    item: InputImage,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> LoadedImage:
    """Decode and preprocess one input; a file that cannot be read gives ``error``, not a raise."""
    try:
        image = read_image(item.path)  # (h, w, 3) uint8 RGB
    except ImageRead as error:
        return LoadedImage(index, item, None, None, str(error))
    tensor = torch.from_numpy(preprocess(image, size, mean, std))  # (3, H, W)
    # Tensors, not arrays: worker processes hand them over in shared memory, uncopied.
    return LoadedImage(index, item, tensor, torch.from_numpy(image), None)


class ImageDataset(Dataset[LoadedImage]):
    """Map-style dataset whose keys are ``(index, InputImage)``: it decodes what it is handed."""

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __getitem__(self, key: tuple[int, InputImage]) -> LoadedImage:
        index, item = key
        return load_image(index, item, self.size, self.mean, self.std)


def load_batches(
    inputs: Iterable[InputImage],
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int,
) -> Iterator[list[LoadedImage]]:
    """Yield lists of at most ``batch_size`` LoadedImage, in input order, decoded lazily.

    ``workers`` > 0 decodes in that many worker processes, 0 in this process. Failed files are
    included with ``tensor=None`` and ``error`` set; this never raises for a bad file.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    loader = DataLoader(
        ImageDataset(size, mean, std),
        batch_sampler=_numbered_batches(inputs, batch_size),
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=_init_worker if workers > 0 else None,
    )
    yield from loader


def _numbered_batches(
    inputs: Iterable[InputImage], batch_size: int
) -> Iterator[list[tuple[int, InputImage]]]:
    """Lists of ``(index, InputImage)`` keys, read lazily from ``inputs`` in the main process."""
    numbered = enumerate(inputs)
    while batch := list(itertools.islice(numbered, batch_size)):
        yield batch


def _as_list(batch: list[LoadedImage]) -> list[LoadedImage]:
    """collate_fn: keep the batch as a list (images differ in size and may have failed)."""
    return batch


def _init_worker(worker_id: int) -> None:
    """Worker processes decode one image each at a time: no OpenCV thread pool inside them."""
    cv2.setNumThreads(1)
