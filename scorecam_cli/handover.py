"""How a decoded image leaves a decoding worker: in shared memory, or copied when that is full.

A DataLoader worker hands its tensors over in shared memory (``/dev/shm``), which torch allocates
while pickling the result in the worker queue's feeder thread. When that fails (Docker's default
64 MB ``/dev/shm`` holds one 12 Mpx photo), the feeder thread prints a traceback and drops the
result, and the main process waits for it for ever. So :func:`for_handover` moves the tensors
to shared memory in the worker itself, where a failure can be caught; if it fails, the image
travels as numpy arrays through the worker's pipe (copied, slower, always possible), and so do
that worker's next images. :func:`receiver` turns them back into tensors in the main process.
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch

from scorecam_cli.errors import first_line

log = logging.getLogger("scorecam_cli")
COPIED = (
    "warning: shared memory is full (%s); decoded images are copied out of the decoding process "
    "instead (slower; a larger /dev/shm avoids it: docker run --shm-size=1g)"
)
_shared_memory_failed: str | None = None  # in a worker: why shared memory failed, once it did


class Decoded(Protocol):
    """What a decoding worker hands over (images.LoadedImage)."""

    tensor: torch.Tensor | None  # (3, H, W) float32
    pixels: torch.Tensor | None  # (H0, W0, 3) uint8


D = TypeVar("D", bound=Decoded)


@dataclass(frozen=True)
class CopiedImage(Generic[D]):
    """A decoded image whose tensors travel by value through the pipe (``loaded`` holds none)."""

    loaded: D
    tensor: np.ndarray | None  # (3, H, W) float32
    pixels: np.ndarray | None  # (H0, W0, 3) uint8
    reason: str  # why shared memory could not take them


def quiet_worker_threads() -> None:
    """In a decoding worker: no tracebacks from its helper threads. Torch hands tensors over by
    file descriptor, served by multiprocessing's resource-sharer thread, which prints a traceback
    through ``sys.excepthook`` when the main process drops a connection (it stops the workers on
    Ctrl-C, at the end or on a failure). Whatever fails in a worker reaches the main process
    anyway (a failed image, a dead worker), which says it in one line."""

    def unprinted(*_args: object) -> None:
        return None

    sys.excepthook = unprinted
    threading.excepthook = unprinted


def for_handover(loaded: D) -> D | CopiedImage[D]:
    """In a worker: ``loaded`` with its tensors in shared memory, or a CopiedImage of it."""
    global _shared_memory_failed
    if _shared_memory_failed is None:
        try:
            for tensor in (loaded.tensor, loaded.pixels):
                if tensor is not None:
                    tensor.share_memory_()
            return loaded
        except (RuntimeError, OSError) as error:  # "unable to allocate shared memory(shm)..."
            _shared_memory_failed = first_line(error)
    bare = copy.copy(loaded)
    bare.tensor, bare.pixels = None, None
    return CopiedImage(
        bare,
        None if loaded.tensor is None else loaded.tensor.numpy(),
        None if loaded.pixels is None else loaded.pixels.numpy(),
        _shared_memory_failed,
    )


def receiver(kind: type[D]) -> Callable[[list[D | CopiedImage[D]]], list[D]]:
    """In the main process: a function from a handed-over batch to its images (of ``kind``),
    which says in one warning line, the first time only, that images are being copied."""
    warned = False

    def receive(batch: list[D | CopiedImage[D]]) -> list[D]:
        nonlocal warned
        images: list[D] = []
        for item in batch:
            if not isinstance(item, CopiedImage):
                images.append(item)
                continue
            restored = copy.copy(item.loaded)
            restored.tensor = None if item.tensor is None else torch.from_numpy(item.tensor)
            restored.pixels = None if item.pixels is None else torch.from_numpy(item.pixels)
            images.append(restored)
            if not warned:
                log.warning(COPIED, item.reason)
                warned = True
        return images

    return receive
