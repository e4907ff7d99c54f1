"""``--labels FILE``: the user's class names, read as untrusted input.

Three formats: a ``.json`` file holding a list of names (index = position) or an object
``{"0": "cat", "1": "dog"}`` whose keys are exactly the indices 0..N-1; any other file is text,
one name per line (UTF-8, a BOM and trailing blank lines ignored). Only a regular file of at
most MAX_BYTES is read, without blocking; names must be non-empty, printable, and at most
MAX_NAME characters. Every problem is one line naming the file
(:class:`~scorecam_cli.errors.BadLabels`).
"""

from __future__ import annotations

import json
from pathlib import Path

from scorecam_cli.errors import BadLabels
from scorecam_cli.file_limits import read_or_fail

MAX_BYTES = 8 * 2**20  # 8 MB: ample for any class list (ImageNet-21k's names are 0.4 MB)
MAX_NAME = 500


def read_labels(path: str) -> list[str]:
    """The class names in file ``path``, index by index."""
    text = _read_text(path)
    where = f"--labels {path}"
    if Path(path).suffix.lower() == ".json":
        return class_names(_json(where, text), where)
    return class_names(_lines(text), where)


def class_names(data: object, where: str) -> list[str]:
    """Checked class names of ``data``: a list of names (index = position) or an object whose
    keys are exactly the indices 0..N-1 (a labels file, a model folder's ``id2label``); every
    problem is one BadLabels line starting with ``where``."""
    names = _by_index(data, where)
    if not names:
        raise BadLabels(f"{where}: holds no class names")
    for index, name in enumerate(names):
        if not name.strip():
            raise BadLabels(f"{where}: the name of class {index} is empty")
        if len(name) > MAX_NAME or not name.isprintable():
            what = "longer than 500 characters" if len(name) > MAX_NAME else "not printable"
            raise BadLabels(f"{where}: the name of class {index} is {what}")
    return [name.strip() for name in names]


def check_count(path: str, names: list[str], classes: int, binary: bool) -> None:
    """BadLabels unless there is one name per explainable class."""
    if len(names) != classes:
        what = "classes (a one-logit binary model: negative, positive)" if binary else "outputs"
        raise BadLabels(f"--labels {path}: {len(names)} names, but the model has {classes} {what}")


def _read_text(path: str) -> str:
    """The text of regular file ``path`` (at most MAX_BYTES), opened without blocking."""
    too_large = f"over {MAX_BYTES // 2**20} MB; not a labels file"
    data = read_or_fail(path, MAX_BYTES, BadLabels, f"--labels {path}", too_large)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadLabels(f"--labels {path}: not UTF-8 text (byte {error.start})") from None


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _json(where: str, text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise BadLabels(f"{where}: not valid JSON ({error})") from None


def _by_index(data: object, where: str) -> list[str]:
    """Names from a list, or from an object whose keys are the indices 0..N-1."""
    if isinstance(data, dict):
        by_index = {}
        for key, name in data.items():
            text = str(key)
            if not text.strip().isdigit() or int(text) in by_index:
                raise BadLabels(f"{where}: key {text!r} is no class index, or twice")
            by_index[int(text)] = name
        if sorted(by_index) != list(range(len(by_index))):
            missing = min(set(range(len(by_index))) - set(by_index))
            raise BadLabels(f"{where}: the indices skip {missing}; give 0 to N-1")
        data = [by_index[index] for index in range(len(by_index))]
    if not isinstance(data, list):
        raise BadLabels(f"{where}: a JSON {type(data).__name__}; give a list or object")
    for index, name in enumerate(data):
        if not isinstance(name, str):
            raise BadLabels(
                f"{where}: the name of class {index} is a {type(name).__name__}, not a string"
            )
    return list(data)
