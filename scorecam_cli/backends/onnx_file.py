"""An ONNX file's own two passes in ONNX Runtime, from one session (no torch model anywhere).

The layer's tensor becomes an extra output of a copy of the graph (its element type from shape
inference; the copy lives in memory only, its external data is read from the file's folder). The
first pass binds the logits and that tensor, viewed as (N, K, h, w) through its layout; the masked
passes bind the logits only. Torch tensors are bound by their memory (I/O binding); an NHWC input
gets the images transposed in torch first. A dry run on two black images at open checks that the
graph takes the input size and a batch of more than one image (the masked passes need both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from scorecam_cli.backends.ort_backend import NUMPY_TYPES, open_session, run_bound
from scorecam_cli.cam import FirstPass, ScoreBatch
from scorecam_cli.errors import BadInputSize, UnsupportedModel, first_line
from scorecam_cli.layers import LayerInfo
from scorecam_cli.layouts import NHWC
from scorecam_cli.models.onnx_model import OnnxModel

TORCH_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64}  # of FLOAT_TYPES
DRY_RUN_BATCH = 2  # images in the dry run: more than one, so a batch of one only is caught
EXPORT_HINT = (
    "export it with one (torch.onnx.export(..., dynamo=True, dynamic_shapes=({0: "
    "torch.export.Dim('batch')},)), or dynamic_axes={INPUT: {0: 'batch'}} without dynamo)"
)


@dataclass(frozen=True)
class OnnxPasses:
    """Both passes of an ONNX file: images (N, 3, H, W) -> logits (N, C) and the layer's
    activations (N, K, h, w); masked images (B, 3, H, W) -> logits (B, C)."""

    first_pass: FirstPass
    score_batch: ScoreBatch
    num_classes: int


def open_passes(
    model: OnnxModel,
    layer: LayerInfo,
    layer_type: int,
    size: tuple[int, int],
    device: torch.device,
    threads: int,
) -> OnnxPasses:
    """One session of ``model`` with ``layer`` (a tensor of element type ``layer_type``) as an
    extra output, dry-run at ``size``. Raises BadInputSize or UnsupportedModel (one line) when
    the graph fails on that size or on a batch of two."""
    import onnx

    if model.batch is not None:
        raise UnsupportedModel(
            f"{model.path}: its graph takes a fixed batch of {model.batch}; the masked passes "
            f"need a dynamic batch: {EXPORT_HINT}"
        )
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    name = layer.ref.name
    if name not in {output.name for output in proto.graph.output}:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, layer_type, None))
    session = open_session(proto.SerializeToString(), device, threads, model.folder)
    classes, shape = _dry_run(session, model, name, size)
    if shape[1:] != layer.shape[1:]:
        raise UnsupportedModel(
            f"{model.path}: tensor {name!r} has shape {shape[1:]} when run, not {layer.shape[1:]} "
            "as shape inference gave; pick another layer"
        )
    layout = layer.layout
    assert layout is not None  # a resolved layer is a map
    feed = _feeder(model)
    logits_dtype, layer_dtype = TORCH_TYPES[model.logits_type], TORCH_TYPES[layer_type]

    def first_pass(images: Tensor) -> tuple[Tensor, Tensor]:
        logits = images.new_empty((len(images), classes), dtype=logits_dtype)
        acts = images.new_empty((len(images), *shape[1:]), dtype=layer_dtype)
        outputs = {model.logits_name: logits, name: acts}
        run_bound(session, {model.input_name: feed(images)}, outputs)
        return logits.float(), layout.to_nchw(acts.float())  # (N, C), (N, K, h, w)

    def score_batch(images: Tensor) -> Tensor:
        logits = images.new_empty((len(images), classes), dtype=logits_dtype)
        run_bound(session, {model.input_name: feed(images)}, {model.logits_name: logits})
        return logits.float()  # (B, C)

    return OnnxPasses(first_pass, score_batch, classes)


def _feeder(model: OnnxModel) -> ScoreBatch:
    """Images (N, 3, H, W) -> the graph's input: its element type, NHWC when it says so,
    contiguous (the tensor itself for a float32 NCHW graph)."""
    dtype = TORCH_TYPES[model.input_type]
    if model.input_layout == NHWC:
        return lambda images: images.permute(0, 2, 3, 1).to(dtype).contiguous()  # (N, H, W, 3)
    return lambda images: images.to(dtype).contiguous()  # (N, 3, H, W)


def _dry_run(
    session: Any, model: OnnxModel, name: str, size: tuple[int, int]
) -> tuple[int, tuple[int, ...]]:
    """C of the logits and the layer tensor's shape, from a run on DRY_RUN_BATCH black images."""
    import numpy as np

    height, width = size
    dims = (3, height, width) if model.input_layout != NHWC else (height, width, 3)
    dtype = NUMPY_TYPES[TORCH_TYPES[model.input_type]]
    outputs = [model.logits_name, name]

    def run(batch: int) -> list[Any]:
        images = np.zeros((batch, *dims), dtype=dtype)
        return list(session.run(outputs, {model.input_name: images}))

    try:
        logits, acts = run(DRY_RUN_BATCH)
    except Exception as many:
        try:
            run(1)
        except Exception as one:
            raise BadInputSize(
                f"{model.path}: the model fails on a {height}x{width} input ({first_line(one)})"
            ) from None
        raise UnsupportedModel(
            f"{model.path}: the graph runs on one image but fails on {DRY_RUN_BATCH} "
            f"({first_line(many)}); the masked passes need a dynamic batch: {EXPORT_HINT}"
        ) from None
    if logits.ndim != 2 or logits.shape[0] != DRY_RUN_BATCH or acts.shape[0] != DRY_RUN_BATCH:
        raise UnsupportedModel(
            f"{model.path}: gave logits of shape {logits.shape} for {DRY_RUN_BATCH} images; "
            "scorecam needs one row of class scores per image"
        )
    return int(logits.shape[1]), tuple(int(d) for d in acts.shape)
