"""Ours: ``compute_cams`` with the masked passes in one backend, and the backends of a case."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from benchkit.cases import Case, log

from scorecam_cli.backends import Backend, load_backend, resolve_backend
from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.devices import as_model_input
from scorecam_cli.errors import BackendUnavailable

Forward = Callable[[torch.Tensor], torch.Tensor]  # images (B, 3, H, W) -> logits (B, C)


def available_backends(device: torch.device) -> list[str]:
    """The backends this benchmark can time here: torch, and each exported one installed."""
    names = []
    for name in ("torch", "onnxruntime", "openvino"):
        try:
            resolve_backend(name, device)
        except BackendUnavailable:
            continue  # not installed, or not for this device (e.g. no CUDA provider)
        names.append(name)
    return names


def case_backends(
    case: Case, names: list[str], threads: int | None
) -> tuple[dict[str, Backend], dict[str, float]]:
    """Each backend named, loaded for the case's model (exports happen here, untimed: the
    end-to-end part times them), and the seconds each took to load. One that falls back to
    torch is dropped (its warning says why)."""
    loaded: dict[str, Backend] = {}
    seconds: dict[str, float] = {}
    device = case.images.device
    size = (case.size, case.size)
    for name in names:
        start = time.perf_counter()
        backend = load_backend(
            case.module,
            name,
            model_name=f"bench-{case.model_name}",
            input_size=size,
            device=device,
            threads=threads,
        )
        seconds[name] = time.perf_counter() - start
        if backend.name != name:
            log(f"  {name}: unavailable for {case.model_name}, skipped")
            continue
        loaded[name] = backend
        log(f"  backend {name}: ready in {seconds[name]:.1f} s")
    return loaded, seconds


def forward_of(case: Case, backend: Backend) -> Forward:
    """The backend's masked-pass callable, or the model's own eager pass."""
    if backend.score_batch is not None:
        return backend.score_batch
    return lambda images: case.module(as_model_input(images))


def run_ours(case: Case, batch_size: int, precision: str, backend: Backend) -> Any:
    """Our CamResult: raw maps (1, 1, h, w) and the forward passes we ran."""
    config = CamConfig(batch_size=batch_size, precision=precision)
    return compute_cams(
        case.module,
        case.layer,
        case.images,
        classes=[case.target],
        config=config,
        score_batch=backend.score_batch,
    )
