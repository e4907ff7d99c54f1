"""Inference backends for Score-CAM's masked passes: one callable "logits of this batch" each.

Only the masked passes leave PyTorch (they need nothing but logits): the first, plain pass (the
activations, through the hook) and the gradient methods always run in eager PyTorch, and the masks
are always built in torch. Backends:

- ``torch``: the model itself, eager (autocast ``--precision fp16|bf16`` applies here only);
- ``onnxruntime``: ONNX Runtime on a copy exported once with ``torch.onnx`` (dynamic batch),
  CPU provider, or the CUDA provider when onnxruntime-gpu is installed and the device is CUDA;
  inputs and outputs are bound to the torch tensors' memory (I/O binding, no copies);
- ``openvino``: OpenVINO's CPU plugin on the same ONNX file, pinned to fp32.

``torch.compile`` is not offered: the issue's figures (EfficientNet-Lite0@224, one thread, ms per
image at batch 1 / 8: eager 15.7 / 24.1, compile 13.3 / 17.4, ONNX Runtime 5.2 / 6.2, OpenVINO
5.2 / 5.7) give it a fraction of the others' gain for a compiler toolchain and a long warm-up.

The export is cached on disk (:mod:`scorecam_cli.backends.cache`); a model that cannot be exported,
or whose exported logits differ from PyTorch's, runs in PyTorch, announced in one warning line.
Threads: one compute pool per process, sized like torch's (OMP_NUM_THREADS, else the cores), set
explicitly on the backend (intra-op threads; no inter-op pool) so that it does not add a pool of
its own. While a backend runs the masked passes, torch itself drops to one thread (see
``scorecam_cli.devices.single_torch_thread``). Images are decoded meanwhile in DataLoader worker
processes (``--workers``, default 1) that run OpenCV and torch on one thread each: decoding a
photo takes milliseconds against seconds of masked passes, so compute keeps all cores. Measured
(the sweep, ``scorecam run sample_images/`` with the default backend): 2 threads 18.1 s with
``--workers 0`` and 18.4 s with 1, 1 thread 31.7 / 32.4 s: one decode process costs about 2%,
and keeps decoding off the compute path when images are large or many.

The one table of backends is :data:`scorecam_cli.backends.kinds.KINDS`. Everything heavy is
imported inside functions.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scorecam_cli.backends.kinds import BACKENDS, KINDS, default_batch_size, default_threads
from scorecam_cli.errors import BackendUnavailable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scorecam_cli.cam import ScoreBatch

__all__ = ["BACKENDS", "KINDS", "Backend", "installed", "load_backend", "resolve_backend"]

log = logging.getLogger("scorecam_cli")


# What ``auto`` takes, fastest first, per device type. CPU: measured by benchmarks/sweep.py
# (results/sweep-cpu.json, exact Score-CAM of coffee.png, 2 threads, best batch): ONNX Runtime
# 2.48 s, OpenVINO 2.65 s, eager PyTorch 8.9 s; whole `scorecam run coffee.png` processes
# (results/cpu-quick.json): 5.36 s and 5.77 s. CUDA: PyTorch (channels_last, autocast,
# out-of-memory halving) until a GPU run measures ONNX Runtime's CUDA provider against it.
AUTO_ORDER = {"cpu": ("onnxruntime", "openvino", "torch"), "cuda": ("torch",)}
INSTALL_HINT = "pip install 'scorecam-cli[fast]'"


@dataclass(frozen=True)
class Backend:
    """What runs the masked passes, with its defaults for this device."""

    name: str  # torch, onnxruntime or openvino: the one that actually runs
    score_batch: ScoreBatch | None  # images (B, 3, H, W) -> logits (B, C); None: the model itself
    batch_size: int | None  # default masked images per pass; None: the core's own default
    threads: int  # CPU compute threads (intra-op) of the backend and of torch


def installed(name: str) -> bool:
    """Whether the packages backend ``name`` needs are importable (nothing is imported)."""
    kind = KINDS.get(name)
    packages = kind.packages if kind else ()
    return all(importlib.util.find_spec(pkg) is not None for pkg in packages)


def resolve_backend(name: str, device: torch.device, precision: str = "fp32") -> str:
    """The backend that runs for ``name`` (``auto`` or a backend) on ``device``.

    Raises BackendUnavailable when an explicitly named backend is missing or cannot honour the
    device or the precision (autocast is PyTorch's; the exported backends run fp32).
    """
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        if precision != "fp32":
            return "torch"
        order = AUTO_ORDER.get(device.type, ("torch",))
        return next(b for b in order if b == "torch" or _usable(b, device))
    if name == "torch":
        return name
    if precision != "fp32":
        raise BackendUnavailable(
            f"--precision {precision} is PyTorch autocast; backend {name} runs fp32 "
            "(use --precision fp32, or --backend torch)"
        )
    if not installed(name):
        raise BackendUnavailable(f"backend {name} is not installed: {INSTALL_HINT}")
    if device.type == "cuda" and name == "openvino":
        raise BackendUnavailable("backend openvino runs on the CPU: use --device cpu")
    if device.type == "cuda" and not _ort_has_cuda():
        raise BackendUnavailable(
            "onnxruntime has no CUDA provider here: pip install onnxruntime-gpu, or use "
            "--backend torch"
        )
    return name


def _usable(name: str, device: torch.device) -> bool:
    if not installed(name):
        return False
    if device.type == "cuda":
        return name == "onnxruntime" and _ort_has_cuda()
    return True


def _ort_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def load_backend(
    model: nn.Module,
    name: str,
    *,
    model_name: str,
    input_size: tuple[int, int],
    device: torch.device,
    precision: str = "fp32",
    threads: int | None = None,
    channels: int = 3,
) -> Backend:
    """The backend ``name`` for the masked passes of ``model`` (eval mode, on ``device``).

    ``threads`` (default: torch's, i.e. OMP_NUM_THREADS or the cores) is applied to torch and
    to the backend. An exported backend is checked against the model's own logits on a batch of
    3 seeded images of ``channels`` input channels; if the export or that check fails, the
    PyTorch backend is returned and one warning line says why.
    """
    import torch

    from scorecam_cli.backends import runtimes

    threads = threads or default_threads()
    torch.set_num_threads(threads)
    chosen = resolve_backend(name, device, precision)
    eager = Backend("torch", None, default_batch_size("torch", device), threads)
    if chosen == "torch":
        return eager
    # auto goes down its order when a backend cannot load the export (not when it cannot be
    # exported at all: every exported backend needs the export)
    order = AUTO_ORDER.get(device.type, ()) if name == "auto" else (chosen,)
    candidates = [b for b in order[order.index(chosen) :] if b != "torch" and _usable(b, device)]
    for number, candidate in enumerate(candidates, start=1):
        try:
            score = runtimes.build(
                model, candidate, model_name, input_size, device, threads, channels
            )
        except runtimes.BackendFailure as exc:
            if number == len(candidates) or isinstance(exc, runtimes.ExportFailure):
                log.warning(
                    "%s: masked passes run in PyTorch, not %s: %s", model_name, candidate, exc
                )
                return eager
            log.info("%s: %s failed (%s); trying %s", model_name, candidate, exc,
                     candidates[number])  # fmt: skip
            continue
        log.debug("masked passes: %s, %d threads", candidate, threads)
        return Backend(candidate, score, default_batch_size(candidate, device), threads)
    return eager
