"""Default batch size and compute threads of each backend, per device type.

Masked images per pass. CPU, torch: 4, measured (benchmarks/results/cpu-full.json: 2-4 were
1.5-3x faster per image than 16-64, page faults on fresh allocations). CPU, onnxruntime and
openvino: the issue's figures (one thread, EfficientNet-Lite0@224, ms per image at batch 1 / 8:
ONNX Runtime 5.2 / 6.2, OpenVINO 5.2 / 5.7) say small batches win there too; 4 amortises the
per-chunk work in Python (mask building, binding). TO CONFIRM with ``benchmarks/sweep.py``.
CUDA: 128 is a guess until a GPU run tunes it; out-of-memory halves it (torch backend).

Threads: one compute pool per process, sized like torch's (OMP_NUM_THREADS, else the cores), set
explicitly on the backend (intra-op threads; no inter-op pool) so that it does not add a pool of
its own. Images are decoded meanwhile in DataLoader worker processes (``--workers``, default 1)
that run OpenCV and torch on one thread each: decoding a photo takes milliseconds against seconds
of masked passes, so compute keeps all cores (TO CONFIRM with ``benchmarks/sweep.py --workers``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BATCH_SIZE = {
    ("torch", "cpu"): None,  # the core's own AUTO_BATCH_SIZE (4)
    ("torch", "cuda"): None,  # the core's own AUTO_BATCH_SIZE (128)
    ("onnxruntime", "cpu"): 4,
    ("onnxruntime", "cuda"): 128,
    ("openvino", "cpu"): 4,
}


def default_batch_size(backend: str, device: torch.device) -> int | None:
    """Masked images per pass for ``backend`` on ``device``; None: the core decides."""
    return BATCH_SIZE.get((backend, device.type))


def default_threads() -> int:
    """Compute threads: torch's own count (OMP_NUM_THREADS, else the physical cores)."""
    import torch

    return max(1, torch.get_num_threads())
