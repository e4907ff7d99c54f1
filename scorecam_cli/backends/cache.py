"""The on-disk cache of exported models: ``$XDG_CACHE_HOME/scorecam`` (default ~/.cache/scorecam).

An exported file is keyed by the model's name, its class and the source file defining it, a hash
of its state dict (the weights, whatever file or seed they came from), the input size, the format
(ONNX, read by every exported backend) and the versions of torch, onnx, onnxscript and this
cache's layout; so a second run with the same model does not export again, and changed weights,
code or versions never reuse a stale file. Files are written atomically (temporary file, rename),
so concurrent runs and interrupted exports never leave a half-written model behind.

The cache is bounded: an entry is one export (``onnx/NAME.onnx``) with the OpenVINO blobs compiled
from it (``openvino-VERSION/NAME/``); each use sets the export's modification time, and each use
removes the least recently used entries until the cache holds at most ``SCORECAM_CACHE_MAX_GB``
(default 2; the entry in use is kept even when it alone is larger), and the temporary files of
exports whose process is gone (this host: by its PID, named in the file; another host's: after a
day). Anything else in ``openvino-*/`` (blobs of an older layout) is an entry of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: `scorecam cache` needs none of it
    from torch import nn

log = logging.getLogger("scorecam_cli")
LAYOUT = 1  # bump when what is stored, or how it is keyed, changes
MAX_GB_VARIABLE = "SCORECAM_CACHE_MAX_GB"
DEFAULT_MAX_GB = 2.0
FOREIGN_TEMP_AGE_S = 24 * 3600  # another host's temporary file is stale after this long
# cached_onnx's temporary files: .<export name>.<host>.<pid>.<mkstemp's random part>.tmp
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]+)\.\w+\.tmp$")


@dataclass(frozen=True)
class CacheEntry:
    """One entry of the cache: an export and its OpenVINO blobs, or a leftover of its own."""

    name: str  # relative to the cache folder: onnx/NAME.onnx, or the leftover's path
    paths: tuple[Path, ...]
    size: int  # bytes, all its files together
    last_used: float  # seconds since the epoch: the export's modification time


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scorecam``, or ``~/.cache/scorecam``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "scorecam"


def state_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict: every entry's name, dtype, shape and bytes, in order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _source_digest(model: nn.Module) -> str:
    """SHA-256 of the file defining the model's class ('' when it has none)."""
    try:
        return hashlib.sha256(Path(inspect.getfile(type(model))).read_bytes()).hexdigest()
    except (OSError, TypeError):
        return ""


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


def onnx_path(model: nn.Module, model_name: str, input_size: tuple[int, int]) -> Path:
    """Where the ONNX export of ``model`` at ``input_size`` (H, W) lives in the cache."""
    parts = {
        "model": model_name,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "source": _source_digest(model),
        "state": state_digest(model),
        "input_size": list(input_size),
        "format": "onnx",
        "versions": {d: _version(d) for d in ("torch", "onnx", "onnxscript")},
        "layout": LAYOUT,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)[:60]
    height, width = input_size
    return cache_dir() / "onnx" / f"{slug}-{height}x{width}-{key}.onnx"


def cached_onnx(
    model: nn.Module,
    path: Path,
    input_size: tuple[int, int],
    *,
    refresh: bool = False,
    label: str | None = None,
    channels: int = 3,
) -> Path:
    """``path`` (from :func:`onnx_path`), exporting ``model`` to it first when it is not cached
    (or ``refresh``); ``label`` names the model in log lines (default: the file's name). Export
    errors propagate; nothing is left in the cache then. Either way the entry counts as used
    now, and the cache is pruned to its limit (:func:`prune_cache`), this entry kept."""
    from scorecam_cli.backends import export as exporter

    label = label if label is not None else path.name
    if path.is_file() and not refresh:
        log.debug("%s: cached export %s", label, path)
        _touch(path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("%s: exporting to ONNX for the masked passes (once; cached in %s)", label, path)
        prefix = f".{path.name}.{_host()}.{os.getpid()}."
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
        os.close(handle)
        try:
            exporter.export_onnx(model, input_size, Path(temporary), channels)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
    limit = cache_limit()
    removed = prune_cache(keep=path, limit=limit)
    if removed:
        log.info(
            "export cache: removed %d least recently used entries (%.2f MB) to stay within %s=%.3g",
            len(removed),
            sum(entry.size for entry in removed) / 2**20,
            MAX_GB_VARIABLE,
            limit / 2**30,
        )
    return path


def openvino_blob_dir(export: Path) -> Path:
    """Where OpenVINO keeps the blobs it compiles from ``export``: part of its cache entry."""
    return cache_dir() / f"openvino-{_version('openvino')}" / export.stem


# ---------------------------------------------------------------------------- bounding the cache


def cache_limit() -> int:
    """The cache's limit in bytes: ``SCORECAM_CACHE_MAX_GB`` (GB of 2**30 bytes), default 2.
    A value that is not a number >= 0 is said in one warning line, and the default applies."""
    text = os.environ.get(MAX_GB_VARIABLE, "").strip()
    try:
        gigabytes = float(text) if text else DEFAULT_MAX_GB
    except ValueError:
        gigabytes = math.nan
    if not (math.isfinite(gigabytes) and gigabytes >= 0):
        log.warning(
            "warning: %s=%r is not a number of GB (>= 0); the export cache keeps %g GB",
            MAX_GB_VARIABLE,
            text,
            DEFAULT_MAX_GB,
        )
        gigabytes = DEFAULT_MAX_GB
    return int(gigabytes * 2**30)


def cache_entries() -> list[CacheEntry]:
    """Every entry of the cache, least recently used first (temporary files are none)."""
    root = cache_dir()
    exports: dict[str, Path] = {}
    entries: list[CacheEntry] = []
    for path in _children(root / "onnx"):
        if _TEMP_NAME.match(path.name) or path.name.endswith(".tmp"):
            continue
        if path.suffix == ".onnx" and path.is_file():
            exports[path.stem] = path
        else:
            entries.append(_entry(root, path))
    blobs: dict[str, list[Path]] = {}
    for folder in _children(root):
        if not (folder.name.startswith("openvino-") and _is_folder(folder)):
            continue
        for path in _children(folder):
            if path.name in exports and _is_folder(path):
                blobs.setdefault(path.name, []).append(path)
            else:
                entries.append(_entry(root, path))
    for stem, path in exports.items():
        parts = (path, *blobs.get(stem, ()))
        entries.append(CacheEntry(f"onnx/{path.name}", parts, sum(map(_size, parts)), _mtime(path)))
    return sorted(entries, key=lambda entry: (entry.last_used, entry.name))


def prune_cache(keep: Path | None = None, limit: int | None = None) -> list[CacheEntry]:
    """Remove stale temporary files, then the least recently used entries until the cache holds
    at most ``limit`` bytes (default :func:`cache_limit`); the entry holding ``keep`` stays.
    Returns the entries removed."""
    remove_stale_temporaries()
    limit = cache_limit() if limit is None else limit
    entries = cache_entries()
    total = sum(entry.size for entry in entries)
    removed = []
    for entry in entries:
        if total <= limit:
            break
        if keep is not None and keep in entry.paths:
            continue
        if _remove(entry):
            total -= entry.size
            removed.append(entry)
    return removed


def clear_cache() -> list[CacheEntry]:
    """Remove every entry and every stale temporary file; returns the entries removed."""
    return prune_cache(limit=-1)


def remove_stale_temporaries(now: float | None = None) -> list[Path]:
    """Remove the temporary files of exports that no longer run; returns them.

    One of this host whose process is gone (by the PID in its name) is stale at once; one of
    another host (a cache shared over the network), or without a PID, after a day.
    """
    now = time.time() if now is None else now
    stale = []
    for path in _children(cache_dir() / "onnx"):
        if not path.name.endswith(".tmp"):
            continue
        match = _TEMP_NAME.match(path.name)
        if match is not None and match["host"] == _host():
            gone = not _running(int(match["pid"]))
        else:
            gone = now - _mtime(path) > FOREIGN_TEMP_AGE_S
        if gone:
            try:
                path.unlink()
            except OSError:
                continue
            stale.append(path)
    return stale


def _host() -> str:
    """This host's name as it goes into a temporary file's name (letters, digits, - and _)."""
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:64] or "host"


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _entry(root: Path, path: Path) -> CacheEntry:
    return CacheEntry(path.relative_to(root).as_posix(), (path,), _size(path), _mtime(path))


def _size(path: Path) -> int:
    """Bytes of a file, or of every file below a folder (symbolic links not followed)."""
    if not _is_folder(path):
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _touch(path: Path) -> None:
    """Mark ``path`` as used now (a read-only cache stays as it is)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _remove(entry: CacheEntry) -> bool:
    """Remove an entry's files; False when any of them could not be removed."""
    done = True
    for path in entry.paths:
        try:
            if _is_folder(path):
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            done = False
    return done
