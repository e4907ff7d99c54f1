"""The record of an ONNX file's graph as a model's runtime (instead of a torch module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# Tensor element types the tool binds (TensorProto codes): float32, float16, float64.
FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64"}


@dataclass(frozen=True, eq=False)
class OnnxModel:
    """An ONNX file's graph (its external data left on disk) and how the tool feeds and reads it.

    ``input_dims`` are the image input's (H, W), each None where the graph leaves it dynamic;
    ``batch`` its fixed batch size (None: dynamic). The logits output is (N, ``num_classes``).
    """

    path: Path  # absolute
    proto: onnx.ModelProto
    input_name: str
    input_layout: str  # nchw or nhwc
    input_dims: tuple[int | None, int | None]
    input_type: int  # TensorProto element type, one of FLOAT_TYPES
    batch: int | None
    logits_name: str
    logits_type: int
    num_classes: int | None  # None: dynamic in the graph (known after the first pass)

    @property
    def folder(self) -> Path:
        """The folder the file lies in: where its external data must be."""
        return self.path.parent
