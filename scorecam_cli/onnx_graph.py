"""An ONNX graph's tensors at one input size: their shapes (ONNX shape inference) and layouts.

The graph is copied with its input fixed to one image at the input size (the torch dry run's
(1, 3, H, W)), large float constants emptied (inference reads only their dimensions), and shape
inference run with data propagation. Layouts are decided by the graph, never by a shape alone:

- ``nchw``: set by the operators that read and write NCHW maps (Conv, pools, BatchNormalization,
  ...) and kept by every other operator whose 4-D output keeps an input's batch and either its
  spatial sides (element-wise ops, channel Concat, MatMul over the channels of an NHWC map) or
  its channels (Pad, strided Slice, Resize);
- ``nhwc``: a Transpose (0, 2, 3, 1) of an NCHW map (and back with (0, 3, 1, 2)), then kept alike;
- tokens: the graph flattens a map of h x w patches into h*w tokens (ViT's patch embedding:
  Reshape and Transpose (0, 2, 1)) and concatenates P tokens before them (class, distillation):
  :func:`token_grid` gives (h, w) and P.

Reshapes and other transposes lead to no layout. A 4-D map must keep the input's aspect ratio in
its layout (:func:`scorecam_cli.layouts.fits`), as for torch models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scorecam_cli.errors import BadModelFile
from scorecam_cli.layouts import NCHW, NHWC, Layout, fits
from scorecam_cli.models.onnx_model import FLOAT_TYPES, OnnxModel

NCHW_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "ConvInteger",
        "QLinearConv",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "BatchNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "LRN",
        "DepthToSpace",
        "SpaceToDepth",
    }
)
RESHAPES = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Gather", "GatherND", "Expand", "Tile"}
)
SMALL_CONSTANT = 64  # constants read for their values (axes, shapes): at most this many items


@dataclass
class GraphTensors:
    """The analysed copy: nodes in order, each tensor's shape, element type and producer."""

    nodes: list[Any]
    shapes: dict[str, tuple[int, ...]]  # known shapes only, batch 1
    types: dict[str, int]
    constants: dict[str, list[int]]  # small integer constants: initializers and Constant nodes
    producer: dict[str, int] = field(default_factory=dict)  # tensor -> index of its node
    consumers: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index, node in enumerate(self.nodes):
            for name in node.output:
                self.producer[name] = index
            for name in node.input:
                self.consumers.setdefault(name, []).append(index)

    def ancestors(self, names: Iterable[str]) -> set[str]:
        """Every tensor that ``names`` are computed from, ``names`` included."""
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.producer:
                todo.extend(self.nodes[self.producer[name]].input)
        return seen

    def descendants(self, name: str) -> set[str]:
        """Every tensor computed from ``name`` (without it)."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            for index in self.consumers.get(todo.pop(), []):
                for out in self.nodes[index].output:
                    if out not in seen:
                        seen.add(out)
                        todo.append(out)
        return seen


def analyse(model: OnnxModel, size: tuple[int, int]) -> GraphTensors:
    """Shape inference on a copy of the graph with one image of ``size`` as its input (large
    float constants emptied first: inference reads their dimensions only)."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model.proto)
    for tensor in copy.graph.initializer:
        if tensor.data_type in FLOAT_TYPES and _count(tensor.dims) > SMALL_CONSTANT:
            for part in ("raw_data", "float_data", "double_data", "int32_data", "external_data"):
                tensor.ClearField(part)
            tensor.data_location = onnx.TensorProto.DEFAULT
    height, width = size
    dims = [1, 3, height, width] if model.input_layout == NCHW else [1, height, width, 3]
    for value in copy.graph.input:
        if value.name == model.input_name:
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for dim in dims:
                shape.dim.add().dim_value = dim
    copy.graph.ClearField("value_info")
    for value in copy.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True).graph
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BadModelFile(
            f"{model.path}: ONNX shape inference fails at {height}x{width} ({reason!r})"
        ) from None
    shapes: dict[str, tuple[int, ...]] = {}
    types: dict[str, int] = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = value.type.tensor_type
        types[value.name] = tensor.elem_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = tuple(int(d.dim_value) for d in tensor.shape.dim)
    for initializer in inferred.initializer:  # weights: their dimensions (a kernel's size)
        shapes.setdefault(initializer.name, tuple(int(d) for d in initializer.dims))
    constants: dict[str, list[int]] = {}
    named = [(t.name, t) for t in inferred.initializer]
    named += [
        (n.output[0], a.t)
        for n in inferred.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    ]
    for name, tensor in named:
        if tensor.data_type in (6, 7) and _count(tensor.dims) <= SMALL_CONSTANT:  # int32, int64
            try:
                constants[name] = [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
            except Exception:  # a malformed constant: its values are not needed
                continue
    return GraphTensors(list(inferred.node), shapes, types, constants)


def _count(dims: Iterable[int]) -> int:
    total = 1
    for dim in dims:
        total *= int(dim)
    return total


# -- Layouts --------------------------------------------------------------------------------------


def permutation(node: Any) -> list[int]:
    """The ``perm`` attribute of a Transpose node ([] when it has none)."""
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def sides(shape: tuple[int, ...], kind: str) -> tuple[int, int, int]:
    """(batch, h, w) of a 4-D shape read as ``kind``."""
    return (shape[0], shape[2], shape[3]) if kind == NCHW else (shape[0], shape[1], shape[2])


def tensor_layouts(
    graph: GraphTensors, model: OnnxModel, size: tuple[int, int]
) -> dict[str, Layout]:
    """The layout of every 4-D map tensor, propagated from the input in the graph's order."""
    kinds: dict[str, str] = {model.input_name: model.input_layout}
    for node in graph.nodes:
        for name in node.output:
            shape = graph.shapes.get(name)
            if shape is None or len(shape) != 4:
                continue
            kind = _output_kind(node, name, shape, kinds, graph)
            if kind is not None:
                kinds[name] = kind
    maps = {name: kind for name, kind in kinds.items() if graph.shapes.get(name, (0,))[0] == 1}
    return {
        name: Layout(kind) for name, kind in maps.items() if fits(kind, graph.shapes[name], size)
    }


def _output_kind(
    node: Any, name: str, shape: tuple[int, ...], kinds: dict[str, str], graph: GraphTensors
) -> str | None:
    """The layout a node gives its 4-D output ``name``, or None."""
    source = kinds.get(node.input[0]) if node.input else None
    if node.op_type in NCHW_OPS:
        return NCHW
    if node.op_type == "Transpose":
        order = permutation(node)
        if source == NCHW and order == [0, 2, 3, 1]:
            return NHWC
        if source == NHWC and order == [0, 3, 1, 2]:
            return NCHW
        return source if source and order == [0, 1, 2, 3] else None
    if node.op_type in RESHAPES:
        return None
    for value in node.input:  # keeps an input's layout when it keeps its sides or channels
        kind, other = kinds.get(value), graph.shapes.get(value)
        if kind and other is not None and len(other) == 4 and _keeps(other, shape, kind):
            return kind
    return None


def _keeps(before: tuple[int, ...], after: tuple[int, ...], kind: str) -> bool:
    """Whether ``after`` keeps the batch of ``before`` and its sides or its channels."""
    same_sides = sides(before, kind) == sides(after, kind)
    return before[0] == after[0] and (same_sides or channels(before, kind) == channels(after, kind))


def channels(shape: tuple[int, ...], kind: str) -> int:
    """C of a 4-D shape read as ``kind``."""
    return shape[1] if kind == NCHW else shape[3]


def token_grid(
    graph: GraphTensors, layouts: dict[str, Layout]
) -> tuple[tuple[int, int] | None, int | None]:
    """The patch grid (h, w) where the graph flattens a map into tokens, and the prefix count P
    of the first Concat that puts P tokens before them (0 without one); (None, None) if none."""
    for index, node in enumerate(graph.nodes):
        if node.op_type not in ("Reshape", "Flatten") or node.input[0] not in layouts:
            continue
        source, out = graph.shapes[node.input[0]], graph.shapes.get(node.output[0])
        kind = layouts[node.input[0]].kind
        if out is None or len(out) != 3:
            continue
        _, h, w = sides(source, kind)
        width = channels(source, kind)
        tokens = None
        if kind == NHWC and out == (1, h * w, width):
            tokens = node.output[0]
        elif kind == NCHW and out == (1, width, h * w):
            tokens = _transposed(graph, node.output[0])
        if tokens is not None:
            return (h, w), _prefix(graph, tokens, h * w, index)
    return None, None


def _transposed(graph: GraphTensors, name: str) -> str | None:
    """The output of a Transpose (0, 2, 1) that reads ``name``, if one does."""
    for index in graph.consumers.get(name, []):
        node = graph.nodes[index]
        if node.op_type == "Transpose" and permutation(node) == [0, 2, 1]:
            return str(node.output[0])
    return None


def _prefix(graph: GraphTensors, tokens: str, patches: int, start: int) -> int:
    """Tokens a Concat along the token axis puts before the patch tokens (0 when none does)."""
    stream = graph.descendants(tokens) | {tokens}
    for node in graph.nodes[start:]:
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        out = graph.shapes.get(node.output[0]) if node.output else None
        if node.op_type != "Concat" or axis not in (1, -2) or out is None or len(out) != 3:
            continue
        if node.input and node.input[-1] in stream and out[1] > patches:
            return out[1] - patches
    return 0
