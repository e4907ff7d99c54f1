"""Build a backend's "logits of this batch" callable: cached export, session, logit check."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from scorecam_cli.backends.cache import cached_onnx, onnx_path
from scorecam_cli.backends.kinds import opener
from scorecam_cli.cam import ScoreBatch
from scorecam_cli.devices import as_model_input

log = logging.getLogger("scorecam_cli")
CHECK_BATCH = 3  # images in the logit check; not the export's example batch (2), so the
# check also proves the batch dimension is dynamic
LOGIT_TOLERANCE = 1e-4  # max |backend - torch| over the logits' largest magnitude (at least 1)


class BackendFailure(Exception):
    """The model cannot run in this backend (export, loading or the logit check failed)."""


class ExportFailure(BackendFailure):
    """The model cannot be exported to ONNX: no exported backend can run it."""


def build(
    model: nn.Module,
    backend: str,
    model_name: str,
    input_size: tuple[int, int],
    device: torch.device,
    threads: int,
    channels: int = 3,
) -> ScoreBatch:
    """The masked-pass callable of ``backend`` for ``model``, checked against the model.

    A cached export that fails to load and does not parse as ONNX is exported again once.
    Raises BackendFailure.
    """
    try:
        path = onnx_path(model, model_name, input_size)  # hashes the weights: once per build
        cached_onnx(model, path, input_size, label=model_name, channels=channels)
    except Exception as exc:  # the exporter raises many kinds; all mean "cannot export"
        raise ExportFailure(f"cannot export it to ONNX ({_first_line(exc)})") from exc
    try:
        score = _open(backend, path, device, threads)
    except Exception as first:
        if _parses_as_onnx(path):  # the backend's failure, not the file's: keep the file
            raise BackendFailure(f"cannot load its ONNX export ({_first_line(first)})") from first
        log.debug("%s: cached export unusable (%s); exporting again", model_name, first)
        try:
            cached_onnx(model, path, input_size, refresh=True, label=model_name, channels=channels)
            score = _open(backend, path, device, threads)
        except Exception as exc:
            raise BackendFailure(f"cannot load its ONNX export ({_first_line(exc)})") from exc
    check_logits(model, score, input_size, device, backend, channels)
    return score


def _parses_as_onnx(path: Path) -> bool:
    """True when ``path`` holds an ONNX model (its graph; external data is not read)."""
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return True


def _open(backend: str, path: Path, device: torch.device, threads: int) -> ScoreBatch:
    return opener(backend)(path, device, threads)


def check_logits(
    model: nn.Module,
    score: ScoreBatch,
    input_size: tuple[int, int],
    device: torch.device,
    backend: str,
    channels: int = 3,
) -> None:
    """Raise BackendFailure unless ``score`` gives the model's logits on seeded images."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((CHECK_BATCH, channels, *input_size), generator=generator).to(device)
    try:
        with torch.inference_mode():
            expected = model(as_model_input(images)).float()  # (B, C)
            got = score(images).float()  # (B, C)
    except Exception as exc:
        raise BackendFailure(f"its {backend} run failed ({_first_line(exc)})") from exc
    if got.shape != expected.shape:
        raise BackendFailure(f"{backend} gave logits {tuple(got.shape)}, not {expected.shape}")
    scale = max(1.0, float(expected.abs().max()))
    diff = float((got - expected).abs().max())
    if not diff <= LOGIT_TOLERANCE * scale:  # also catches NaN
        raise BackendFailure(f"{backend}'s logits differ from PyTorch's by {diff:.3g}")
    log.debug("%s logits match PyTorch's to %.3g", backend, diff)


def _first_line(exc: BaseException) -> str:
    """The first line of the root cause's message, without terminal colours, at most 200 chars."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
