"""One manifest line, read as untrusted input: a map entry with the keys and types the writer
gives it, or the reason it is none.

JSON that nests too deeply, NaN, infinity and numbers past a double are refused (a page's
``JSON.parse`` rejects NaN; a 400-digit ``written_at`` does not fit a float); so are missing
keys, values of the wrong type, and output paths that are absolute, contain ``..`` that leaves
OUT, or lead out of it through a symlink. Output paths come back normalised, relative to OUT.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from scorecam_cli.confined import relative_inside

REQUIRED = ("input", "npy", "overlay")
PATHS = ("npy", "overlay", "heatmap")  # outputs: relative to OUT, and inside it
_STRINGS = ("input", "input_abspath", "class_name", "model", "layer", "method", *PATHS)
_INTEGERS = ("class_index", "forward_passes", "forward_passes_saved")
_NUMBERS = ("probability", "written_at")
_LARGEST = 2**53  # integers beyond this lose precision in a double (and in a page's script)


class _NotFinite(ValueError):
    """NaN, Infinity or a float literal past a double's range."""


def parse_line(raw: bytes, root: Path) -> tuple[dict[str, Any] | None, str]:
    """The map entry of one manifest line (``root``: OUT, resolved) and "", or None and why."""
    try:
        entry = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotFinite as error:
        return None, f"{error} (only finite numbers are valid)"
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        torn = not raw.endswith(b"\n")
        return None, "torn line (the run was cut off)" if torn else "not valid JSON"
    if not isinstance(entry, dict):
        return None, "not a map entry (no JSON object)"
    problem = _type_problem(entry)
    if problem is not None:
        return None, problem
    for key in PATHS:
        if entry.get(key) is not None:
            try:
                entry[key] = relative_inside(root, entry[key])
            except ValueError as error:
                return None, f"its {key} path {error}"
    return entry, ""


def _type_problem(entry: dict[str, Any]) -> str | None:
    """Why ``entry`` is no map entry (a key missing, a value of the wrong type), else None."""
    for key in REQUIRED:
        if not isinstance(entry.get(key), str):
            return f"not a map entry (no {key})"
    for key in _STRINGS:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key} is not a string"
        if value is not None and "\0" in value:
            return f"{key} holds a NUL byte"
    for key in (*_INTEGERS, *_NUMBERS):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key} is not a number"
        if key in _INTEGERS and not isinstance(value, int):
            return f"{key} is not an integer"
        if abs(value) > _LARGEST and isinstance(value, int):
            return f"{key} is out of range"
    size = entry.get("original_size")
    if size is not None and not (
        isinstance(size, list)
        and len(size) == 2
        and all(type(side) is int and 0 <= side <= _LARGEST for side in size)
    ):
        return "original_size is not [height, width]"
    options = entry.get("options")
    if options is not None and not isinstance(options, dict):
        return "options is not a JSON object"
    return None


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text if len(text) <= 20 else f"{text[:20]}...")
    return value
