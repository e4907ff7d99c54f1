"""Where and how tensors run: the device, the model's placement, precision and CPU threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # of PRECISIONS


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but torch sees no CUDA GPU")
    return device


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
