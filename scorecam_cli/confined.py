"""Paths kept inside a folder that someone else may have filled (a zip of results, a shared folder).

Names read from a run folder are resolved under it and refused when they lead out of it; folders
are made under a base folder only through real folders, never through a symlink planted below
it. The base folder itself is the user's choice and may be a symlink. The checks look before
they write: they stop a planted link, not a process racing to plant one meanwhile.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from scorecam_cli.errors import OutputWrite


def resolved(path: Path) -> Path:
    """``path`` made absolute with every symlink followed (as far as they exist); never raises
    for a missing path or a symlink loop."""
    return Path(os.path.realpath(path))


def relative_inside(root: Path, value: str) -> str:
    """``value``, a file's path relative to folder ``root`` (given resolved), normalised
    (``a/./b/../c`` -> ``a/c``); ValueError saying why when it is absolute, empty, or leads out
    of ``root``, by ``..`` or through a symlink."""
    if "\0" in value:
        raise ValueError("holds a NUL byte")
    if os.path.isabs(value):
        raise ValueError("is an absolute path")
    normal = os.path.normpath(value)
    if normal == "." or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise ValueError("leads out of the run folder" if normal != "." else "is empty")
    if not resolved(root / normal).is_relative_to(root):
        raise ValueError("leads out of the run folder through a symlink")
    return normal


def check_real_folders(base: Path, folder: Path) -> None:
    """Raise OutputWrite when a folder on the way from ``base`` down to ``folder`` (``base``
    excepted) is a symlink or not a folder; folders still missing are fine (made fresh)."""
    relative = os.path.relpath(folder, base)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise OutputWrite(f"{folder}: outside {base}; nothing is written there")
    current = base
    for part in Path(relative).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        except OSError as error:
            raise OutputWrite(f"{current}: {error.strerror or error}") from None
        if stat.S_ISLNK(mode):
            raise OutputWrite(f"{current}: a symlinked folder; nothing is written through it")
        if not stat.S_ISDIR(mode):
            raise OutputWrite(f"{current}: not a folder")


def make_folder(base: Path, folder: Path) -> None:
    """Make ``folder`` (and its parents) below ``base``, never through a symlink below ``base``;
    OutputWrite says why not."""
    check_real_folders(base, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputWrite(f"{folder}: {error.strerror or error}") from None
