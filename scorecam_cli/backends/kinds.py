"""The one table of inference backends (torch-free): what each needs, what opens an ONNX file
in it, and its default batch per device type."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from scorecam_cli.cam import ScoreBatch


@dataclass(frozen=True)
class BackendKind:
    """One backend: the packages it needs, what opens an ONNX file in it (``module:function``,
    imported only when used; None for torch itself), and its default batch per device type.

    Default batches (masked images per pass; None: the core's own AUTO_BATCH_SIZE, 4 on the CPU
    and 128 on CUDA) were measured by ``benchmarks/sweep.py``
    (benchmarks/results/sweep-cpu.json: exact Score-CAM of coffee.png with the embedded model at
    224, 2 cores, 2 threads). CPU, torch: 4 (8.9 s against 12.9 / 9.6 / 10.7 / 16.2 s at 1 / 2 /
    8 / 16). CPU, onnxruntime and openvino: 8; on the embedded model within 3% of their best,
    batch 2 (2.56 s against 2.48 s, and 2.69 s against 2.65 s); on models with bigger layers much
    faster than 2: random-init resnet50 at 96 took 11.0 s against 13.3 s (onnxruntime) and
    11.2 s against 15.4 s (openvino) (results/cpu-quick-resnet50.json). CUDA: 128 is a guess until
    a GPU run tunes it; out-of-memory halves it (torch backend).
    """

    packages: tuple[str, ...] = ()
    opener: str | None = None
    batch_size: dict[str, int | None] = field(default_factory=dict)


KINDS: dict[str, BackendKind] = {
    "torch": BackendKind(batch_size={"cpu": None, "cuda": None}),
    "onnxruntime": BackendKind(
        ("onnxruntime", "onnx", "onnxscript"),
        "scorecam_cli.backends.ort_backend:open_onnxruntime",
        {"cpu": 8, "cuda": 128},
    ),
    "openvino": BackendKind(
        ("openvino", "onnx"), "scorecam_cli.backends.openvino_backend:open_openvino", {"cpu": 8}
    ),
}
BACKENDS = ("auto", *KINDS)  # what --backend takes


def default_batch_size(backend: str, device: torch.device) -> int | None:
    """Masked images per pass for ``backend`` on ``device``; None: the core decides."""
    return KINDS[backend].batch_size.get(device.type)


def default_threads() -> int:
    """Compute threads: torch's own count (OMP_NUM_THREADS, else the physical cores)."""
    import torch

    return max(1, torch.get_num_threads())


def opener(name: str) -> Callable[[Path, torch.device, int], ScoreBatch]:
    """The function that opens an ONNX file in exported backend ``name``: (path, device,
    threads) -> its masked-pass callable."""
    target = KINDS[name].opener
    if target is None:
        raise ValueError(f"no exported backend named {name!r}")
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
