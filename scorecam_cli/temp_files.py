"""Our temp files' names, and when one is an orphan that a killed writer left behind.

An atomic write goes to ``.<name>.<writer>-<pid>.<8 hex>.tmp`` beside its target, then is renamed
onto it. ``<writer>`` (8 hex) names the process's PID namespace on this kernel boot (and host
name): a temp file whose writer has our tag and whose PID is gone is an orphan. A writer with
another tag (another node or container writing into a shared OUT) may be alive: its temp files
are left alone until they are ``ORPHAN_AGE_S`` old (a temp file lives for the seconds of one
write), as are temp files whose name has no tag (older versions).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path

ORPHAN_AGE_S = 24 * 3600
_TEMP_NAME = re.compile(
    r"^\..+\.(?:(?P<writer>[0-9a-f]{8})-)?(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$", re.DOTALL
)


@functools.cache
def writer_tag() -> str:
    """8 hex digits naming this process's PID namespace: the kernel's boot id, the namespace's
    inode and the host name (the host name alone where /proc is absent)."""
    parts = [socket.gethostname()]
    for read in (
        lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        lambda: os.readlink("/proc/self/ns/pid"),
    ):
        with contextlib.suppress(OSError):
            parts.append(read())
    return hashlib.blake2s("\0".join(parts).encode(), digest_size=4).hexdigest()


def temp_path(path: Path) -> Path:
    """A fresh hidden temp file name beside ``path`` for this process to write."""
    return path.parent / f".{path.name}.{writer_tag()}-{os.getpid()}.{secrets.token_hex(4)}.tmp"


def is_orphan(path: Path, now: float | None = None) -> bool:
    """True when ``path`` is a temp file of ours that no live writer will rename: its writer
    is this namespace's and its PID is gone, or it is ``ORPHAN_AGE_S`` old (status changed
    that long ago, before ``now``)."""
    match = _TEMP_NAME.match(path.name)
    if match is None:
        return False
    if match["writer"] == writer_tag() and not _alive(int(match["pid"])):
        return True
    try:
        changed = os.lstat(path).st_ctime
    except OSError:
        return False
    return (time.time() if now is None else now) - changed > ORPHAN_AGE_S


def remove_if_orphan(path: Path) -> None:
    """Remove ``path`` when it is an orphan temp file (see :func:`is_orphan`)."""
    if is_orphan(path):
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # another user's process, or not a pid we can ask about: leave it
    return True
