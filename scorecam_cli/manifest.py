"""The run manifest ``OUT/manifest.jsonl``: one JSON line per written map; one writer, one reader.

Each line is the map's record (the keys of ``--format jsonl``) with its output paths relative to
OUT, plus ``original_size`` ([H, W] of the input), ``input_abspath`` (the input as an absolute path,
since ``input`` is as given, relative to the run's working directory), ``options`` (the run's
settings) and ``written_at`` (seconds since the epoch). Lines are appended and flushed one at a
time, so a killed run leaves a valid file with at most a torn last line, which the reader skips
and reports. A map written again (``--overwrite``) gets a new line and readers keep the newest
line of each map (by ``written_at``, then file order; maps are told apart by their ``npy`` path).
Runs of a sharded job write parts ``manifest.I-of-N.jsonl`` beside it; the reader merges every
part, so a shard re-run with ``--overwrite`` supersedes the plain manifest's older line too.

Text is ASCII JSON (``ensure_ascii``), so file names that are not valid UTF-8 (kept by Python as
surrogate escapes) survive the round trip: ``os.fsencode(entry["input"])`` gives the original bytes.

A run folder may come from someone else, so the reader trusts nothing in it: only regular files
(not symlinks) of at most ``MAX_FILE_BYTES`` are read, lines of at most ``MAX_LINE_BYTES``; a line
is kept only when it is a JSON object with the keys and types a map entry has, finite numbers,
and output paths that stay inside OUT once resolved (they are kept normalised). Every other line
or file is one problem line, and skipped. The writer appends only to a regular file, never
through a symlink.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from scorecam_cli.confined import resolved
from scorecam_cli.errors import OutputWrite
from scorecam_cli.file_limits import NotRegularFile, open_regular
from scorecam_cli.manifest_lines import parse_line

MANIFEST_NAME = "manifest.jsonl"
PART_GLOB = "manifest.*-of-*.jsonl"
OUTPUT_KEYS = ("overlay", "npy", "heatmap")
MAX_FILE_BYTES = 256 * 2**20  # per manifest file: some 400,000 maps (a line is about 600 bytes)
MAX_LINE_BYTES = 2**20


def part_name(shard: int, shards: int) -> str:
    """The manifest part of shard ``shard`` of ``shards``: ``manifest.I-of-N.jsonl``."""
    return f"manifest.{shard}-of-{shards}.jsonl"


def manifest_files(root: Path) -> list[Path]:
    """What is named like the manifest or a part under ``root``, in a stable order (the plain
    manifest first); the reader refuses whatever of it is no regular file."""
    main = root / MANIFEST_NAME
    parts = sorted(root.glob(PART_GLOB))
    return [main, *parts] if os.path.lexists(main) else parts


def check_manifest_target(path: Path) -> None:
    """Raise OutputWrite when ``path`` exists and cannot take manifest lines: a symlink (the
    lines would land wherever it points) or something other than a regular file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise OutputWrite(f"{path}: {error.strerror or error}") from None
    if stat.S_ISLNK(mode):
        raise OutputWrite(f"{path}: a symlink; manifest lines are never written through one")
    if not stat.S_ISREG(mode):
        raise OutputWrite(f"{path}: not a regular file; cannot append manifest lines to it")


def entry_from_record(
    record: Mapping[str, Any],
    root: Path,
    original_size: tuple[int, int],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """A manifest line from a stdout record: output paths made relative to ``root`` (OUT)."""
    entry = dict(record)
    for key in OUTPUT_KEYS:
        if entry.get(key) is not None:
            entry[key] = os.path.relpath(entry[key], root)
    if entry.get("input") is not None:
        entry["input_abspath"] = os.path.abspath(entry["input"])
    entry["original_size"] = [int(original_size[0]), int(original_size[1])]
    entry["options"] = dict(options)
    entry["written_at"] = time.time()  # orders lines of one map across manifest parts
    return entry


class ManifestWriter:
    """Appends entries to one manifest file, one flushed line each; opened on the first entry."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def append(self, entry: Mapping[str, Any]) -> None:
        """Write ``entry`` as one JSON line and flush it; NaN or infinity raises ValueError."""
        line = json.dumps(entry, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        if self._file is None:
            self._file = self._open()
        self._file.write(line + "\n")
        self._file.flush()

    def _open(self) -> IO[str]:
        """The manifest opened for appending: a regular file, never through a symlink, never
        blocking (a FIFO named like it is refused); OutputWrite otherwise."""
        check_manifest_target(self.path)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as error:
            if error.errno == errno.ELOOP:
                check_manifest_target(self.path)  # a symlink planted meanwhile: say so
            raise OutputWrite(f"{self.path}: {error.strerror or error}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            check_manifest_target(self.path)
            raise OutputWrite(f"{self.path}: not a regular file")
        # A killed run left half a line: end it, so that our first line stands on its own.
        torn = info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n"
        handle = os.fdopen(fd, "a", encoding="ascii", newline="\n")
        if torn:
            handle.write("\n")
        return handle

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class Manifest:
    """What a run folder holds: the last entry of each map (in the order of those last lines),
    and one line per manifest line that could not be read (``file:line: reason``)."""

    root: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def path_of(self, entry: Mapping[str, Any], key: str) -> Path | None:
        """The absolute-or-cwd path of output ``key`` (overlay, npy, heatmap) of ``entry``."""
        value = entry.get(key)
        return None if value is None else self.root / str(value)

    def input_of(self, entry: Mapping[str, Any]) -> Path | None:
        """The map's input image if it is still there: by its absolute path at run time, else as
        given (relative to the current directory); None when neither exists."""
        for value in (entry.get("input_abspath"), entry.get("input")):
            if isinstance(value, str) and os.path.isfile(value):
                return Path(value)
        return None


def read_manifest(root: Path, require_files: bool = False) -> Manifest:
    """Read ``root``'s manifest and parts; files and lines that cannot be read as a map entry
    are skipped, one problem line each (see the module's docstring).

    With ``require_files``, maps whose ``.npy`` (written last, after the map's line) or overlay is
    missing are left out and reported too: what remains is exactly the finished maps on disk.
    """
    base = resolved(root)
    latest: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for path in manifest_files(root):
        for number, entry, problem in _entries(path, base):
            if entry is None:
                problems.append(f"{path}:{number}: {problem}; line skipped" if number else problem)
                continue
            key = entry["npy"]
            if _written_at(entry) >= _written_at(latest.get(key)):
                latest.pop(key, None)  # a newer line for the same map moves it to the end
                latest[key] = entry
    entries = sorted(latest.values(), key=_written_at)  # stable: file order among equal times
    if require_files:
        entries, missing = _with_files(root, entries)
        problems.extend(missing)
    return Manifest(root, entries, problems)


def _written_at(entry: Mapping[str, Any] | None) -> float:
    """When the line was written (0 for lines without a time, so file order decides them)."""
    if entry is None:
        return float("-inf")
    value = entry.get("written_at")
    return float(value) if value is not None else 0.0  # a finite number: parse_line checked


def _with_files(
    root: Path, entries: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    kept: list[dict[str, Any]] = []
    missing: list[str] = []
    for entry in entries:
        absent = [k for k in ("npy", "overlay") if not os.path.isfile(root / entry[k])]
        if absent:
            missing.append(f"{root / entry['npy']}: listed, but its {absent[0]} is missing")
        else:
            kept.append(entry)
    return kept, missing


def _entries(path: Path, base: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """``(line number, entry, "")`` per good line of manifest file ``path``, ``(number, None,
    reason)`` per bad one, ``(0, None, line)`` when the file is not read at all. Only the bytes
    the file held when opened are read, a line at a time, each at most ``MAX_LINE_BYTES``."""
    try:
        handle, size = open_regular(path, follow_symlinks=False)
    except NotRegularFile as error:
        yield 0, None, f"{path}: {error.strerror}, not a manifest file; not read"
        return
    except OSError as error:
        yield 0, None, f"{path}: cannot read ({error.strerror or error}); not read"
        return
    with handle:
        if size > MAX_FILE_BYTES:
            limit = MAX_FILE_BYTES // 2**20
            yield 0, None, f"{path}: {size / 2**20:,.0f} MB, over the limit of {limit} MB; not read"
            return
        left, number = size, 0
        while left > 0:
            raw = handle.readline(min(left, MAX_LINE_BYTES + 1))
            if not raw:
                return  # the file shrank meanwhile
            left -= len(raw)
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                left -= _skip_line(handle, left)
                yield number, None, f"over {MAX_LINE_BYTES // 2**20} MB"
                continue
            if raw.strip():
                entry, problem = parse_line(raw, base)
                yield number, entry, problem


def _skip_line(handle: IO[bytes], left: int) -> int:
    """Read past the rest of the current line (at most ``left`` bytes); the bytes read."""
    skipped = 0
    while skipped < left:
        chunk = handle.readline(min(left - skipped, 2**16))
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            break
    return skipped
