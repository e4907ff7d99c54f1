"""Default batch size and compute threads of each backend, per device type.

Masked images per pass, measured by ``benchmarks/sweep.py`` (benchmarks/results/sweep-cpu.json:
exact Score-CAM of coffee.png with the embedded model at 224, 2 cores, 2 threads). CPU, torch: 4
(8.9 s against 12.9 / 9.6 / 10.7 / 16.2 s at 1 / 2 / 8 / 16). CPU, onnxruntime and openvino: 8.
On the embedded model it is within 3% of their best, batch 2 (2.56 s against 2.48 s, and 2.69 s
against 2.65 s); on models with bigger layers it is much faster than 2: random-init resnet50 at
96 took 11.0 s against 13.3 s (onnxruntime) and 11.2 s against 15.4 s (openvino)
(results/cpu-quick-resnet50.json). The masks of a chunk go into one reused buffer, so big chunks
cost no allocations. CUDA: 128 is a guess until a GPU run tunes it; out-of-memory halves it
(torch backend).

Threads: one compute pool per process, sized like torch's (OMP_NUM_THREADS, else the cores), set
explicitly on the backend (intra-op threads; no inter-op pool) so that it does not add a pool of
its own. While a backend runs the masked passes, torch itself drops to one thread (see
``scorecam_cli.devices.single_torch_thread``). Images are decoded meanwhile in DataLoader worker
processes (``--workers``, default 1) that run OpenCV and torch on one thread each: decoding a
photo takes milliseconds against seconds of masked passes, so compute keeps all cores. Measured
(the sweep, ``scorecam run sample_images/`` with the default backend): 2 threads 18.1 s with
``--workers 0`` and 18.4 s with 1, 1 thread 31.7 / 32.4 s: one decode process costs about 2%,
and keeps decoding off the compute path when images are large or many.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BATCH_SIZE = {
    ("torch", "cpu"): None,  # the core's own AUTO_BATCH_SIZE (4)
    ("torch", "cuda"): None,  # the core's own AUTO_BATCH_SIZE (128)
    ("onnxruntime", "cpu"): 8,
    ("onnxruntime", "cuda"): 128,
    ("openvino", "cpu"): 8,
}


def default_batch_size(backend: str, device: torch.device) -> int | None:
    """Masked images per pass for ``backend`` on ``device``; None: the core decides."""
    return BATCH_SIZE.get((backend, device.type))


def default_threads() -> int:
    """Compute threads: torch's own count (OMP_NUM_THREADS, else the physical cores)."""
    import torch

    return max(1, torch.get_num_threads())
