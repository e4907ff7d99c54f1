"""Export a model to ONNX with a dynamic batch dimension (``torch.onnx``, the dynamo exporter)."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

INPUT_NAME = "images"  # (batch, 3, H, W) float32
OUTPUT_NAME = "logits"  # (batch, C) float32


def export_onnx(
    model: nn.Module,
    input_size: tuple[int, int],
    path: Path,
    channels: int = 3,
    *,
    nhwc: bool = False,
    dynamic_size: bool = False,
) -> None:
    """Write ``model`` (eval mode) as one ONNX file at ``path``: images (B, channels, H, W) ->
    logits.

    B is dynamic; H and W are fixed unless ``dynamic_size``. With ``nhwc`` the model takes
    (B, H, W, channels). The exporter's own chatter is kept off stdout and stderr; any failure
    raises (the caller falls back to PyTorch).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type != "cpu":  # export a CPU copy: the graph does not depend on the device
        model = copy.deepcopy(model).cpu()
    generator = torch.Generator().manual_seed(0)
    shape = (2, *input_size, channels) if nhwc else (2, channels, *input_size)
    example = torch.randn(shape, generator=generator)  # (2, C, H, W) or (2, H, W, C)
    dims = {0: torch.export.Dim("batch", min=1)}
    if dynamic_size:
        height, width = (1, 2) if nhwc else (2, 3)
        dims[height] = torch.export.Dim("height", min=16, max=4096)
        dims[width] = torch.export.Dim("width", min=16, max=4096)
    chatter = io.StringIO()
    with (
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
        warnings.catch_warnings(),
        _no_logging(),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(dims,),
            external_data=False,
        )


@contextlib.contextmanager
def _no_logging() -> Iterator[None]:
    """Silence every logger while the exporter runs (torch.export and onnxscript log warnings
    about the traced code on failure; the caller says what matters in one line)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)
