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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

MANIFEST_NAME = "manifest.jsonl"
PART_GLOB = "manifest.*-of-*.jsonl"
OUTPUT_KEYS = ("overlay", "npy", "heatmap")


def part_name(shard: int, shards: int) -> str:
    """The manifest part of shard ``shard`` of ``shards``: ``manifest.I-of-N.jsonl``."""
    return f"manifest.{shard}-of-{shards}.jsonl"


def manifest_files(root: Path) -> list[Path]:
    """The manifest and its parts under ``root``, in a stable order (the plain manifest first)."""
    main = root / MANIFEST_NAME
    parts = sorted(root.glob(PART_GLOB))
    return [main, *parts] if main.is_file() else parts


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = _ends_without_newline(self.path)
        handle = self.path.open("a", encoding="ascii", newline="\n")
        if torn:  # a killed run left half a line: end it, so our first line stands on its own
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


def _ends_without_newline(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


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
    """Read ``root``'s manifest and parts; torn or invalid lines are skipped and reported.

    With ``require_files``, maps whose ``.npy`` (written last, after the map's line) or overlay is
    missing are left out and reported too: what remains is exactly the finished maps on disk.
    """
    latest: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for path in manifest_files(root):
        for number, entry, problem in _lines(path):
            if problem is not None:
                problems.append(f"{path}:{number}: {problem}")
                continue
            key = str(entry["npy"])
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
    return float(value) if isinstance(value, (int, float)) else 0.0


def _with_files(
    root: Path, entries: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    kept: list[dict[str, Any]] = []
    missing: list[str] = []
    for entry in entries:
        absent = [k for k in ("npy", "overlay") if not (root / str(entry.get(k))).is_file()]
        if absent:
            missing.append(f"{root / str(entry['npy'])}: listed, but its {absent[0]} is missing")
        else:
            kept.append(entry)
    return kept, missing


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                torn = not raw.endswith(b"\n")
                yield number, {}, "torn line (the run was cut off)" if torn else "not valid JSON"
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("npy"), str):
                yield number, {}, "not a map entry (no npy path)"
                continue
            yield number, entry, None
