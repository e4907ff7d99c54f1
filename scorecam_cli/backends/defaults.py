"""Default batch size and compute threads of each backend, per device type.

Masked images per pass, measured by ``benchmarks/sweep.py`` (benchmarks/results/sweep-cpu.json:
exact Score-CAM of coffee.png with the embedded model at 224, 2 cores, 2 threads). CPU, torch: 4
(8.6 s against 12.4 / 11.7 / 11.2 s at 1 / 8 / 16: big batches page-fault on fresh allocations).
CPU, onnxruntime and openvino: 16 (2.84 s and 2.75 s, against 3.38 s and 3.08 s at 4): their
plain passes cost the same per image from batch 1 to 16, so bigger chunks amortise the per-chunk
work in Python (mask building, binding). CUDA: 128 is a guess until a GPU run tunes it;
out-of-memory halves it (torch backend).

Threads: one compute pool per process, sized like torch's (OMP_NUM_THREADS, else the cores), set
explicitly on the backend (intra-op threads; no inter-op pool) so that it does not add a pool of
its own. Images are decoded meanwhile in DataLoader worker processes (``--workers``, default 1)
that run OpenCV and torch on one thread each: decoding a photo takes milliseconds against seconds
of masked passes, so compute keeps all cores. Measured (the sweep, ``scorecam run sample_images/``
with the default backend): 2 threads 20.8 s with ``--workers 0`` and 21.0 s with 1, 1 thread
28.8 / 30.1 s: one decode process costs nothing and keeps decoding off the compute path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BATCH_SIZE = {
    ("torch", "cpu"): None,  # the core's own AUTO_BATCH_SIZE (4)
    ("torch", "cuda"): None,  # the core's own AUTO_BATCH_SIZE (128)
    ("onnxruntime", "cpu"): 16,
    ("onnxruntime", "cuda"): 128,
    ("openvino", "cpu"): 16,
}


def default_batch_size(backend: str, device: torch.device) -> int | None:
    """Masked images per pass for ``backend`` on ``device``; None: the core decides."""
    return BATCH_SIZE.get((backend, device.type))


def default_threads() -> int:
    """Compute threads: torch's own count (OMP_NUM_THREADS, else the physical cores)."""
    import torch

    return max(1, torch.get_num_threads())
