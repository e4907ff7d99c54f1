"""Where and how tensors run: the device, the model's placement, precision and CPU threads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from scorecam_cli.errors import BadDevice

log = logging.getLogger("scorecam_cli")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # of PRECISIONS


def resolve_device(spec: str = "auto") -> torch.device:
    """The device ``spec`` names: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``
    or ``cuda:N``. Raises BadDevice for a device torch cannot name or we cannot compute on."""
    allowed = "auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device("cpu" if spec == "auto" else spec)
    except (RuntimeError, ValueError):
        raise BadDevice(f"--device {spec!r} is not a device; use {allowed}") from None
    if spec == "auto" and torch.cuda.is_available():
        device = torch.device("cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA GPU"
            raise BadDevice(f"--device {spec}: torch sees {found}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise BadDevice(f"--device {spec}: MPS (Apple GPU) is not available here")
    elif device.type != "cpu":
        raise BadDevice(f"--device {spec}: cannot compute maps on {device.type}; use {allowed}")
    return device


def check_cpu_precision(device: torch.device, precision: str) -> None:
    """BadDevice for fp16 autocast of torch on the CPU (emulated: several times slower than
    fp32); bf16 on the CPU gets a warning."""
    if device.type == "cpu" and precision == "fp16":
        raise BadDevice(
            "--precision fp16 on the CPU is emulated, about 6x slower than fp32 and less exact; "
            "use fp32 (fp16 is for CUDA)"
        )
    if device.type == "cpu" and precision == "bf16":
        log.warning(
            "warning: --precision bf16 on the CPU is fast only on CPUs with bf16 instructions "
            "(AVX512-BF16, AMX), and less exact than fp32"
        )


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in eval mode; channels_last on CUDA."""
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def precision_context(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[None]:
    """Autocast to ``precision`` (fp32: no autocast) for forward passes on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def as_model_input(images: Tensor) -> Tensor:
    """Images (N, 3, H, W) in the layout the model runs fastest in: channels_last on CUDA."""
    if images.device.type == "cuda":
        return images.contiguous(memory_format=torch.channels_last)
    return images


def as_float32(images: Tensor) -> Tensor:
    """Images (B, 3, H, W) as contiguous float32 NCHW: the tensor itself when it already is."""
    return images.to(torch.float32).contiguous()


@contextlib.contextmanager
def single_torch_thread(active: bool) -> Iterator[None]:
    """Torch on one intra-op thread meanwhile, when ``active``; restored after.

    Between a backend's passes torch only builds the next masks (cheap, memory-bound). With more
    threads, torch's idle OpenMP workers spin after each op and take cores from the backend's own
    pool: on 2 cores that cost the OpenVINO passes 15-20% (benchmarks/results/sweep-cpu.json).
    """
    if not active:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
