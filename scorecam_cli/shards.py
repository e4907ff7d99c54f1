"""Deterministic shards of the inputs, for job arrays: ``--shard I/N`` keeps shard I of N.

An input belongs to shard ``blake2b(relative path) mod N``: the hash of the POSIX form of the
relative path its outputs mirror (the bytes of the name as the file system gives them). It does
not depend on the input's position, on the other inputs or on the process (unlike Python's salted
``hash()``), so every node of a job agrees without talking to the others, shards 0..N-1 cover
the inputs exactly once, and adding a file never moves another one between shards. Inputs whose
outputs would collide (the same relative path) land in the same shard, where the collision is
reported as in an unsharded run.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # images imports torch and OpenCV; parsing ``--shard`` needs neither
    from scorecam_cli.images import InputImage


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index}/{self.count}: need 0 <= I < N, e.g. 0/4 to 3/4 for N=4"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, item: InputImage) -> bool:
        return shard_of(item.relative, self.count) == self.index


_SHARD = re.compile(r"([0-9]{1,9})/([0-9]{1,9})")  # ASCII digits only: int() takes "1_0", "١"


def parse_shard(text: str) -> Shard:
    """``"I/N"`` in ASCII digits -> Shard(I, N); ValueError with a one-line reason otherwise."""
    found = _SHARD.fullmatch(text)
    if found is None:
        shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
        raise ValueError(f"{shown} is not I/N in digits 0-9 (e.g. 0/4 for the first of 4 shards)")
    return Shard(int(found[1]), int(found[2]))


def shard_of(relative: PurePath, count: int) -> int:
    """The shard (0..count-1) of an input whose outputs mirror ``relative``."""
    key = os.fsencode(relative.as_posix())
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def in_shard(inputs: Iterable[InputImage], shard: Shard | None) -> Iterator[InputImage]:
    """The inputs of ``shard``, in their order; all of them when ``shard`` is None."""
    for item in inputs:
        if shard is None or shard.holds(item):
            yield item
