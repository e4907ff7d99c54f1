"""The on-disk cache of exported models: ``$XDG_CACHE_HOME/scorecam`` (default ~/.cache/scorecam).

An exported file is keyed by the model's name, its class and the source file defining it, a hash
of its state dict (the weights, whatever file or seed they came from), the input size, the format
(ONNX, read by every exported backend) and the versions of torch, onnx, onnxscript and this
cache's layout; so a second run with the same model does not export again, and changed weights,
code or versions never reuse a stale file. Files are written atomically (temporary file, rename),
so concurrent runs and interrupted exports never leave a half-written model behind.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn

from scorecam_cli.backends import export as exporter

log = logging.getLogger("scorecam_cli")
LAYOUT = 1  # bump when what is stored, or how it is keyed, changes


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scorecam``, or ``~/.cache/scorecam``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "scorecam"


def state_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict: every entry's name, dtype, shape and bytes, in order."""
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
    errors propagate; nothing is left in the cache then."""
    label = label if label is not None else path.name
    if path.is_file() and not refresh:
        log.debug("%s: cached export %s", label, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("%s: exporting to ONNX for the masked passes (once; cached in %s)", label, path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        exporter.export_onnx(model, input_size, Path(temporary), channels)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path
