"""Find input images (files, folders, stdin lists), decode them with OpenCV, batch them for torch.

Streaming design: the main process enumerates the inputs lazily (a folder walk or stdin lines) and
hands them to a ``DataLoader`` through its batch sampler, which always runs in the main process.
The "indices" it yields are ``(index, InputImage)`` keys, so workers decode exactly the images
they are handed, in input order, and at most ``prefetch_factor * workers`` batches are read ahead.
Workers never read stdin or walk folders themselves, so a ``find ... | scorecam run -`` pipe works.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from scorecam_cli.errors import ImageRead
from scorecam_cli.file_limits import (
    DEFAULT_LIMITS,
    JPEG_MAGIC,
    Limits,
    captured_stderr,
    header_pixels,
    image_bytes,
)
from scorecam_cli.handover import CopiedImage, for_handover, quiet_worker_threads, receiver

# OpenCV logs its own warnings and errors to stderr; we report failures ourselves, in one line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".gif"}
    | {".pbm", ".pgm", ".ppm", ".pnm", ".sr", ".ras", ".jp2"}
)


@dataclass(frozen=True)
class InputImage:
    """An image to explain: where to read it, and the relative path its outputs mirror."""

    path: Path
    relative: Path
    problem: str | None = None  # why it cannot be read at all (a folder we could not list...)


@dataclass
class LoadedImage:
    """One decoded input, or the reason it could not be decoded (then ``tensor`` is None)."""

    index: int
    input: InputImage
    tensor: torch.Tensor | None  # (3, H, W) float32, normalised, at the model's input size
    pixels: torch.Tensor | None  # (H0, W0, 3) uint8 RGB as decoded, for rendering
    error: str | None
    warning: str | None = None  # what the decoder said on stderr about a file it did decode

    @property
    def original_size(self) -> tuple[int, int]:
        """(H0, W0) of the decoded image; (0, 0) on failure."""
        if self.pixels is None:
            return (0, 0)
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


Handed = LoadedImage | CopiedImage[LoadedImage]  # what a decoding worker sends
# The model's input size (H, W), or a rule giving it from the decoded (H0, W0) (--keep-aspect)
Size = tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]]


# ---------------------------------------------------------------------------- finding inputs


def find_inputs(
    specs: Sequence[str], stdin: IO[bytes] | IO[str] | None = None, null: bool = False
) -> Iterator[InputImage]:
    """Lazily yield the images named by ``specs``: files, folders (recursive), or ``-`` for stdin.

    Named files and paths that do not exist are yielded as they are, so that reading them
    reports the problem; so are folders that cannot be listed and symlink loops (with
    ``problem`` set). ``stdin`` defaults to ``sys.stdin``; ``null`` splits it on NUL bytes.
    """
    for spec in specs:
        if spec == "-":
            source = stdin if stdin is not None else sys.stdin
            yield from _stdin_inputs(getattr(source, "buffer", source), null)
        elif os.path.isdir(spec):
            root = Path(spec)
            for path, problem in _walk(root):
                yield InputImage(path, path.relative_to(root), problem)
        else:
            path = Path(spec)
            yield InputImage(path, Path(path.name))


def _walk(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """Image files below ``folder`` in sorted relative-path order; hidden entries are skipped.

    Symlinked folders are not followed (no loops); symlinked files are. A folder that cannot
    be listed, or a symlink that cannot be followed, comes out with the reason, not a raise.
    """
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        yield folder, f"{folder}: cannot list folder ({error.strerror or error})"
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(path)
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file()
        except OSError as error:
            yield path, f"{path}: cannot follow ({error.strerror or error})"
            continue
        if is_dir:
            yield from _walk(path)
        elif is_file:
            yield path, None
        elif entry.is_symlink() and not os.path.exists(path):
            yield path, f"{path}: broken symlink or symlink loop"


def _stdin_inputs(stream: IO[bytes] | IO[str] | Iterable[str], null: bool) -> Iterator[InputImage]:
    """One input per non-blank line (or NUL-separated name), read lazily; outputs mirror a
    made-safe form of the path. Names are bytes decoded as the file system does."""
    for raw in _records(stream, b"\0" if null else b"\n"):
        name = os.fsdecode(raw.rstrip(b"\r") if not null else raw)
        if not null:
            name = name.strip()
        if not name:
            continue
        if "\0" in name:
            shown = name.replace("\0", "\\0")
            yield InputImage(Path(shown), Path("__"), f"{shown}: a path with a NUL byte")
            continue
        yield InputImage(Path(name), _safe_relative(name))


def _records(stream: IO[bytes] | IO[str] | Iterable[str], separator: bytes) -> Iterator[bytes]:
    """Records of ``stream`` split on ``separator``, read in chunks as they come (a stream of
    bytes or text, or any iterable of text chunks such as lines)."""
    pending = b""
    for chunk in _chunks(stream):
        pending += os.fsencode(chunk) if isinstance(chunk, str) else chunk
        *complete, pending = pending.split(separator)
        yield from complete
    if pending:
        yield pending


def _chunks(stream: IO[bytes] | IO[str] | Iterable[str]) -> Iterator[bytes | str]:
    read = getattr(stream, "read1", None) or getattr(stream, "read", None)
    if read is None:
        yield from stream
        return
    while chunk := read(65536):
        yield chunk


def _safe_relative(name: str) -> Path:
    """A relative path that cannot leave the output folder: ``/a/../b.jpg`` -> ``a/__/b.jpg``."""
    path = PurePath(name)
    parts = path.parts[1:] if path.anchor else path.parts
    safe = ["__" if part == ".." else part for part in parts]
    return Path(*safe) if safe else Path("__")


# ---------------------------------------------------------------------------- decoding


def read_image(path: Path, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; raise ImageRead with a one-line reason.

    Only regular files up to ``limits.max_file_bytes`` are read, and only images whose header
    gives at most ``limits.max_pixels`` pixels are decoded (no size in the header: refused).
    EXIF orientation is applied, gray is expanded to 3 channels, alpha is composited over white,
    and 16-bit or float images are scaled to 8 bits (value / 257 for 16-bit).
    """
    data = image_bytes(path, limits)
    buffer = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies EXIF orientation but gives 8-bit BGR without alpha (None for float).
    oriented = _decode(buffer, cv2.IMREAD_COLOR)  # (H, W, 3) uint8 BGR
    # IMREAD_UNCHANGED keeps alpha and depth but ignores EXIF orientation (TIFF excepted).
    # JPEG has neither alpha nor 16 bits, so one decode does.
    jpeg = data.startswith(JPEG_MAGIC)
    raw = oriented if jpeg else _decode(buffer, cv2.IMREAD_UNCHANGED)  # (H, W[, C]), any depth
    if raw is None:
        raise ImageRead(f"{path}: not an image OpenCV can decode")
    if raw.shape[0] * raw.shape[1] > limits.max_pixels:  # larger than its header said
        raise ImageRead(
            f"{path}: {raw.shape[0] * raw.shape[1]:,} pixels, over the limit of "
            f"{limits.max_pixels:,} (--max-pixels)"
        )
    if oriented is None or raw.dtype not in (np.uint8, np.uint16):
        return _to_rgb8(raw)  # no comparable 8-bit view to take the orientation from
    if raw.dtype == np.uint8 and (raw.ndim == 2 or raw.shape[2] in (1, 3)):
        return np.ascontiguousarray(oriented[..., ::-1])  # nothing was lost: use the oriented one
    return _to_rgb8(_orient_like(raw, oriented))


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
    """(h, w, 3) uint8 RGB -> (C, H, W) float32 C-contiguous, for size=(H, W), C = len(mean).

    The whole image is resized, never cropped (INTER_AREA when shrinking, INTER_LINEAR otherwise),
    scaled to [0, 1], then normalised per channel: ``(x - mean) / std`` (C = 1: gray first).
    """
    if len(mean) not in (1, 3) or len(std) != len(mean):
        raise ValueError(f"mean and std need 1 or 3 values each, got {list(mean)}, {list(std)}")
    if len(mean) == 1:  # a grayscale model
        image_rgb = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)  # (h, w)
    height, width = size
    if image_rgb.shape[:2] != (height, width):
        shrinking = height <= image_rgb.shape[0] and width <= image_rgb.shape[1]
        method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image_rgb = np.asarray(cv2.resize(image_rgb, (width, height), interpolation=method))
    image_rgb = image_rgb.reshape(height, width, len(mean))  # (H, W, C)
    scaled = image_rgb.astype(np.float32) / 255.0  # (H, W, C)
    normed = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normed.transpose(2, 0, 1))  # (C, H, W)


# ---------------------------------------------------------------------------- batching


def load_image(
    index: int,
    item: InputImage,
    size: Size,
    mean: Sequence[float],
    std: Sequence[float],
    limits: Limits = DEFAULT_LIMITS,
) -> LoadedImage:
    """Decode and preprocess one input; a file that cannot be read gives ``error``, not a raise.

    What the decoding libraries print on stderr meanwhile is captured: it becomes the error's
    detail when decoding fails, else ``warning``, each naming the file.
    """
    if item.problem is not None:
        return LoadedImage(index, item, None, None, item.problem)
    with captured_stderr() as said:
        try:
            image = read_image(item.path, limits)  # (h, w, 3) uint8 RGB
        except ImageRead as error:
            image, failure = None, str(error)
        except MemoryError:
            image, failure = None, f"{item.path}: out of memory while decoding"
    detail = "; ".join(said)[:300] or None
    if image is None:
        return LoadedImage(index, item, None, None, f"{failure} ({detail})" if detail else failure)
    target = size(image.shape[:2]) if callable(size) else size  # (H, W)
    tensor = torch.from_numpy(preprocess(image, target, mean, std))  # (C, H, W)
    # Tensors, not arrays: worker processes hand them over in shared memory, uncopied.
    warning = f"{item.path}: decoder said: {detail}" if detail else None
    return LoadedImage(index, item, tensor, torch.from_numpy(image), None, warning)


class ImageDataset(Dataset[Handed]):
    """Map-style dataset whose keys are ``(index, InputImage)``: it decodes what it is handed."""

    def __init__(
        self,
        size: Size,
        mean: Sequence[float],
        std: Sequence[float],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.size = size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.limits = limits

    def __getitem__(self, key: tuple[int, InputImage]) -> Handed:
        index, item = key
        loaded = load_image(index, item, self.size, self.mean, self.std, self.limits)
        return loaded if get_worker_info() is None else for_handover(loaded)


def load_batches(
    inputs: Iterable[InputImage],
    size: Size,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int,
    limits: Limits = DEFAULT_LIMITS,
) -> Iterator[list[LoadedImage]]:
    """Yield lists of at most ``batch_size`` LoadedImage, in input order, decoded lazily.

    ``workers`` > 0 decodes in that many worker processes, 0 in this process. Failed files are
    included with ``tensor=None`` and ``error`` set; this never raises for a bad file. A batch
    also ends once its images' header pixel counts reach ``limits.batch_pixels``. A worker
    killed from outside (the OOM killer) fails the images it had in hand; a fresh pool goes on.
    With shared memory full, images are copied out of the workers instead (one warning).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    numbered = enumerate(inputs)
    in_hand: deque[tuple[int, InputImage]] = deque()
    receive = receiver(LoadedImage)  # says once when shared memory was full
    while True:
        loader = DataLoader(
            ImageDataset(size, mean, std, limits),
            batch_sampler=_numbered_batches(numbered, batch_size, limits.batch_pixels, in_hand),
            num_workers=workers,
            collate_fn=_as_list,
            worker_init_fn=_init_worker if workers > 0 else None,
        )
        batches = iter(loader)
        _default_sigchld()  # a dead worker is reported by the next fetch, not at a random point
        try:
            for batch in map(receive, batches):
                done = {loaded.index for loaded in batch}
                while in_hand and in_hand[0][0] in done:
                    in_hand.popleft()
                yield batch
            return
        except (RuntimeError, OSError, EOFError) as error:
            # A worker died: torch says so (RuntimeError), or the hand-over of its tensors broke.
            if workers == 0 or (
                isinstance(error, RuntimeError) and "DataLoader worker" not in str(error)
            ):
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
            lost = list(in_hand)
            in_hand.clear()
            del batches
            why = f"the decoding process died ({reason}; killed for memory?)"
            yield [LoadedImage(i, item, None, None, f"{item.path}: {why}") for i, item in lost]


def _default_sigchld() -> None:
    """Torch raises a dead worker's error from a SIGCHLD handler, anywhere in the main thread;
    the default handler leaves it to the fetch (which checks worker liveness every few seconds)."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _numbered_batches(
    numbered: Iterator[tuple[int, InputImage]],
    batch_size: int,
    batch_pixels: int,
    in_hand: deque[tuple[int, InputImage]],
) -> Iterator[list[tuple[int, InputImage]]]:
    """Lists of ``(index, InputImage)`` keys, read lazily in the main process; each handed-out key
    is noted in ``in_hand`` until its image comes back."""
    batch: list[tuple[int, InputImage]] = []
    pixels = 0
    for key in numbered:
        batch.append(key)
        in_hand.append(key)
        pixels += 0 if key[1].problem is not None else header_pixels(key[1].path)
        if len(batch) >= batch_size or pixels >= batch_pixels:
            yield batch
            batch, pixels = [], 0
    if batch:
        yield batch


def _as_list(batch: list[Handed]) -> list[Handed]:
    """collate_fn: keep the batch as a list (images differ in size and may have failed)."""
    return batch


def _init_worker(worker_id: int) -> None:
    """Worker processes decode one image each at a time: no OpenCV thread pool inside them.

    They ignore Ctrl-C: the main process decides how the run ends, and stops them."""
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_worker_threads()
