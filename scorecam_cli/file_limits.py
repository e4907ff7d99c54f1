"""Reading input files safely: only regular files, under a size limit, without blocking; image
sizes from headers and visible truncation before decoding; what C decoders print on stderr,
captured (numpy-free)."""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from scorecam_cli.errors import ImageRead
from scorecam_cli.image_headers import FORMATS, image_size, jpeg_segments

JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Limits:
    """What one input may cost before it is decoded: file size and pixel count (from its header).

    ``batch_pixels`` bounds the original pixels of one batch, so a batch of large images is cut
    short rather than held in memory whole.
    """

    max_file_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 50_000_000
    batch_pixels: int = 100_000_000


DEFAULT_LIMITS = Limits()


def header_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) from the image header alone (:mod:`scorecam_cli.image_headers`); None if unknown."""
    return image_size(data)


class NotRegularFile(OSError):
    """The path names no regular file: a folder, a FIFO, a device, a socket (or a symlink, when
    symlinks are not followed); ``strerror`` says which."""


def open_regular(path: Path, follow_symlinks: bool = True) -> tuple[BinaryIO, int]:
    """``path`` opened for reading, and its size, when it is a regular file.

    Opened without blocking and checked on the open descriptor, so a FIFO, a device
    (``/dev/zero``) or a socket fails at once, never hangs; without ``follow_symlinks`` a symlink
    fails too. Raises NotRegularFile, or the OSError of the open (FileNotFoundError...).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise NotRegularFile(errno.ELOOP, "a symlink") from None
        if error.errno == errno.EISDIR:
            raise NotRegularFile(errno.EISDIR, "a folder") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise NotRegularFile(errno.EISDIR, "a folder")
        raise NotRegularFile(errno.EINVAL, _file_kind(info.st_mode))
    return os.fdopen(fd, "rb"), info.st_size


class TooLarge(OSError):
    """A file over the size limit; ``size`` is its size when the file system told it, else None
    (it grew past the limit while read)."""

    def __init__(self, size: int | None) -> None:
        super().__init__(errno.EFBIG, "over the size limit")
        self.size = size


def read_regular(path: Path | str, limit: int) -> bytes:
    """The bytes of regular file ``path``, at most ``limit`` of them (:func:`open_regular`: never
    a FIFO, device or socket, never blocking). Raises NotRegularFile, TooLarge, or the OSError of
    the open or the read; callers turn them into their own one-line errors."""
    file, size = open_regular(Path(path))
    with file:
        if size > limit:
            raise TooLarge(size)
        data = file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(None)
    return data


def read_or_fail(
    path: Path | str, limit: int, fail: Callable[[str], Exception], where: str, too_large: str
) -> bytes:
    """:func:`read_regular`, its errors raised as one ``fail(line)`` starting with ``where``:
    ``not a regular file``, ``too_large`` (the caller's words for a file over ``limit``), or
    ``cannot read (...)``."""
    try:
        return read_regular(path, limit)
    except NotRegularFile:  # a folder, FIFO or device: never read
        raise fail(f"{where}: not a regular file") from None
    except TooLarge:
        raise fail(f"{where}: {too_large}") from None
    except OSError as error:
        raise fail(f"{where}: cannot read ({error.strerror or error})") from None


def read_bytes(path: Path, limit: int = DEFAULT_LIMITS.max_file_bytes) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ImageRead otherwise.

    The file is opened without blocking and checked to be a regular file before any read, so a
    FIFO, a device (``/dev/zero``) or a socket named as an input fails at once.
    """
    try:
        data = read_regular(path, limit)
    except FileNotFoundError:
        raise ImageRead(f"{path}: no such file") from None
    except NotRegularFile as error:
        if error.errno == errno.EISDIR:
            raise ImageRead(f"{path}: is a folder, not an image file") from None
        raise ImageRead(f"{path}: not a regular file ({error.strerror})") from None
    except TooLarge as error:
        size = "" if error.size is None else f"{error.size / 2**20:,.1f} MB, "
        raise ImageRead(
            f"{path}: {size}over the limit of {limit / 2**20:,.0f} MB (--max-file-mb)"
        ) from None
    except OSError as error:
        raise ImageRead(f"{path}: cannot read ({error.strerror or error})") from None
    if not data:
        raise ImageRead(f"{path}: empty file")
    return data


def image_bytes(path: Path, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of an image file that may be decoded under ``limits``; ImageRead otherwise.

    A regular file of at most ``limits.max_file_bytes``, not visibly truncated, whose header
    announces at most ``limits.max_pixels`` pixels (see :func:`check_before_decoding`).
    """
    data = read_bytes(path, limits.max_file_bytes)
    check_before_decoding(path, data, limits)
    return data


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what C libraries (libpng, libjpeg, libtiff) print on file descriptor 2 meanwhile.

    The lines land in the yielded list when the block ends, so they can be reported with the
    name of the file that caused them. Only in the main thread of a process (else a no-op).
    """
    lines: list[str] = []
    try:
        if threading.current_thread() is not threading.main_thread():
            raise OSError("not the main thread")
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # stderr closed, or not ours to redirect
        yield lines
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read(4096).decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def header_pixels(path: Path) -> int:
    """The pixel count a regular file's header announces (0 when unknown); never blocks."""
    size = header_size_of(path)
    return size[0] * size[1] if size else 0


def header_size_of(path: Path) -> tuple[int, int] | None:
    """(H, W) a regular file's header announces (None when unknown); never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.read(fd, 256 * 1024)
    except OSError:
        return None
    finally:
        os.close(fd)
    return header_size(head)


def check_before_decoding(path: Path, data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise ImageRead when ``data``, the bytes of the file at ``path``, is visibly cut short, or
    its header gives no image size (it is never decoded to find out), or more pixels than
    ``limits.max_pixels``."""
    problem = truncation(data)
    if problem is not None:
        raise ImageRead(f"{path}: {problem}")
    size = header_size(data)
    if size is None:
        raise ImageRead(f"{path}: not a {FORMATS} image (no image size in its header)")
    if size[0] * size[1] > limits.max_pixels:
        raise ImageRead(
            f"{path}: {size[1]}x{size[0]} is {size[0] * size[1]:,} pixels, over the limit of "
            f"{limits.max_pixels:,} (--max-pixels)"
        )


def truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG is visibly cut short, else None (checked before OpenCV sees it)."""
    if data.startswith(JPEG_MAGIC) and not _jpeg_has_end(data):
        return "truncated JPEG (no end-of-image marker)"
    if data.startswith(PNG_MAGIC) and b"IEND" not in data:
        return "truncated PNG (no IEND chunk)"
    return None


def _jpeg_has_end(data: bytes) -> bool:
    """True when an end-of-image marker (FF D9) follows the first start-of-scan (FF DA).

    Segments before the scan are skipped by their length, so an EXIF thumbnail's own end marker
    does not count; data after the end marker (as in motion photos) is allowed.
    """
    stop = 2  # where the walk stopped: the scan's marker, or past the last segment it read
    for marker, pos, after in jpeg_segments(data):
        stop = pos if marker == 0xDA else after
    return data.find(b"\xff\xd9", stop) != -1
