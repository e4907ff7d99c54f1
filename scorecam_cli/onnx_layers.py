"""An ONNX graph's tensors as layers: which are maps, in which layout, and the default by rule.

A layer of an ONNX file is one of its intermediate tensors, by name; its shape and layout come
from :mod:`scorecam_cli.onnx_graph` (shape inference at the input size, layouts the graph
decides). Token tensors are every (1, P + h*w, C) tensor of the graph's patch grid (h, w) and
prefix count P, read as ``tokens+P``.

**Default, by the same rule as for torch models**: the last map before global pooling, not inside
the classifier head: the input of the last global pooling (GlobalAveragePool, or a ReduceMean over
the spatial axes) whose output reaches the logits through no further map, read back through
no-ops (Transpose, Identity, Dropout) and a 1x1 classifier convolution (SqueezeNet's class maps);
without such a pooling, the last map that is no pooling or no-op output. Token graphs take the
last LayerNormalization output that the last attention's Softmax reads (the last block's first
norm, ``ln_1``), for the reason the README gives.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any

from scorecam_cli.errors import UnknownLayer
from scorecam_cli.layers import LayerInfo, LayerRef
from scorecam_cli.layouts import NCHW, TOKENS, Layout, TokenHints, forced_layout
from scorecam_cli.models.onnx_model import FLOAT_TYPES, OnnxModel
from scorecam_cli.onnx_graph import GraphTensors, analyse, tensor_layouts, token_grid

POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool"})
GLOBAL_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
REDUCTIONS = frozenset({"ReduceMean", "ReduceMax", "ReduceSum", "ReduceL2"})
NO_OPS = frozenset({"Identity", "Dropout", "Transpose", "Cast"})
NORMS = frozenset({"LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"})
ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip"})


@dataclass(frozen=True)
class GraphLayers:
    """The tensors of an ONNX graph at one input size: every node output with a known shape, in
    the graph's order (maps carry their layout), and the default layer (None: no map)."""

    source: str  # the file, for messages
    infos: list[LayerInfo]
    default: LayerInfo | None
    types: dict[str, int]  # element type of each tensor
    grid: tuple[int, int] | None  # the token grid (h, w) the graph decides (None: no tokens)
    prefix: int | None  # prefix tokens before the grid's (None: no tokens)

    def info(self, name: str) -> LayerInfo | None:
        return next((info for info in self.infos if info.ref.name == name), None)


def graph_layers(
    model: OnnxModel, size: tuple[int, int], prefix_tokens: int | None = None
) -> GraphLayers:
    """Shape inference, layouts and the default layer of ``model``'s graph at ``size`` (H, W).

    ``prefix_tokens`` (``--prefix-tokens``) overrides the prefix count the graph gives.
    """
    graph = analyse(model, size)
    layouts = tensor_layouts(graph, model, size)
    grid, prefix = token_grid(graph, layouts)
    if prefix_tokens is not None:
        prefix = prefix_tokens
    infos = []
    for index, node in enumerate(graph.nodes):
        for name in node.output:
            if not name or name not in graph.shapes:
                continue
            shape = graph.shapes[name]
            layout = layouts.get(name)
            if grid is not None and prefix is not None and len(shape) == 3:
                layout = _tokens(shape, grid, prefix)
            if graph.types.get(name) not in FLOAT_TYPES:
                layout = None
            role = "pooling" if node.op_type in POOLS else "no-op" if node.op_type in NO_OPS else ""
            infos.append(LayerInfo(LayerRef(name, None, layout), shape, role, index, index))
    default = _default(graph, infos, model)
    return GraphLayers(str(model.path), infos, default, graph.types, grid, prefix)


def resolve_onnx_layer(
    layers: GraphLayers,
    name: str | None,
    size: tuple[int, int],
    layout: str | None = None,
) -> LayerInfo:
    """The tensor ``name`` (None: the default by rule) of a graph's ``layers`` at ``size``, as a
    map. ``layout`` (nchw, nhwc or tokens) overrides how it is read. Unknown names fail with the
    closest map names; a tensor that is no map fails with its shape."""
    if name is None and layout is None:
        if layers.default is None:
            raise UnknownLayer(f"{layers.source}: the graph has no tensor the tool reads as maps")
        return layers.default
    if name is None:
        raise UnknownLayer("--layout needs --layer: it says how to read that tensor")
    info = layers.info(name)
    if info is None:
        maps = [i.ref.name for i in layers.infos if i.is_map]
        close = difflib.get_close_matches(name, maps, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownLayer(
            f"no tensor named {name!r} in {layers.source}{hint} (list them with 'scorecam "
            "layers FILE.onnx')"
        )
    if layout is not None:
        forced = _forced(layout, info.shape, size, layers)
        if forced is None or layers.types.get(name) not in FLOAT_TYPES:
            raise UnknownLayer(f"tensor {name!r} has shape {info.shape}, which is no {layout} map")
        info = replace(info, ref=replace(info.ref, layout=forced))
    if not info.is_map:
        raise UnknownLayer(
            f"tensor {name!r} has shape {info.shape}, which the tool cannot read as maps "
            "(N, C, h, w) with h, w > 1; pick another or say how with --layout nchw|nhwc|tokens"
        )
    return info


def _forced(
    kind: str, shape: tuple[int, ...], size: tuple[int, int], layers: GraphLayers
) -> Layout | None:
    """``--layout kind`` for ``shape``: tokens of the graph's grid, else as for torch models
    (a square grid for a square input), or None when the shape cannot be that layout."""
    if kind == TOKENS and layers.grid is not None and layers.prefix is not None:
        return _tokens(shape, layers.grid, layers.prefix)
    return forced_layout(kind, shape, size, TokenHints(None, layers.prefix))


def _tokens(shape: tuple[int, ...], grid: tuple[int, int], prefix: int) -> Layout | None:
    """tokens+P for a (1, P + h*w, C) shape of the graph's token grid (h, w), else None."""
    if len(shape) == 3 and shape[0] == 1 and shape[1] == prefix + grid[0] * grid[1]:
        return Layout(TOKENS, prefix, grid)
    return None


# -- The default layer ----------------------------------------------------------------------------


def _default(graph: GraphTensors, infos: list[LayerInfo], model: OnnxModel) -> LayerInfo | None:
    maps = {info.ref.name: info for info in infos if info.is_map}
    if not maps:
        return None
    feeding = graph.ancestors([model.logits_name])
    tokens = [i for i in maps.values() if i.layout is not None and i.layout.kind == TOKENS]
    if tokens:
        return _token_default(graph, tokens, feeding)
    pool = _head_pool(graph, maps, feeding)
    if pool is not None:
        classes = model.num_classes or graph.shapes.get(model.logits_name, (0, 0))[-1]
        name = _back_through_head(graph, str(graph.nodes[pool].input[0]), maps, classes)
        if name in maps:
            return maps[name]
    kept = [i for i in maps.values() if not i.role and i.ref.name in feeding]
    return kept[-1] if kept else None


def _token_default(graph: GraphTensors, tokens: list[LayerInfo], feeding: set[str]) -> LayerInfo:
    """The last norm output that the last attention's Softmax reads (else the last residual Add
    of two token tensors it reads, else the last token tensor)."""
    softmaxes = [n for n in graph.nodes if n.op_type == "Softmax" and n.input[0] in graph.shapes]
    attention = [n for n in softmaxes if len(graph.shapes[n.input[0]]) >= 3]
    if not attention:
        return ([i for i in tokens if i.ref.name in feeding] or tokens)[-1]
    read = graph.ancestors(attention[-1].input)
    names = {info.ref.name for info in tokens}
    before = [info for info in tokens if info.ref.name in read]

    def made_by(info: LayerInfo, ops: frozenset[str]) -> bool:
        return graph.nodes[info.start].op_type in ops

    norms = [info for info in before if made_by(info, NORMS)]
    residual = [
        info
        for info in before
        if made_by(info, frozenset({"Add"}))
        and all(name in names for name in graph.nodes[info.start].input)
    ]
    return (norms or residual or before or tokens)[-1]


def _head_pool(graph: GraphTensors, maps: dict[str, LayerInfo], feeding: set[str]) -> int | None:
    """The last global pooling of a map whose output reaches the logits through no map."""
    found = None
    for index, node in enumerate(graph.nodes):
        source = node.input[0] if node.input else ""
        if source not in maps or not _is_global_pool(graph, node, maps[source]):
            continue
        out = node.output[0]
        if out in feeding and not graph.descendants(out) & maps.keys():
            found = index
    return found


def _is_global_pool(graph: GraphTensors, node: Any, source: LayerInfo) -> bool:
    """GlobalAveragePool & co, a Reduce* over the spatial axes, or a pool as large as its map."""
    if node.op_type in GLOBAL_POOLS:
        return True
    assert source.layout is not None  # maps only
    spatial = {2, 3} if source.layout.kind == NCHW else {1, 2}
    if source.layout.kind == TOKENS:
        spatial = {1}
    if node.op_type in REDUCTIONS:
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1:
            axes = graph.constants.get(node.input[1])
        reduced = {a % len(source.shape) for a in axes or []}
        return reduced >= spatial and 0 not in reduced
    if node.op_type in ("AveragePool", "MaxPool"):
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
        return len(source.shape) == 4 and kernel == list(source.shape[2:])
    return False


def _back_through_head(
    graph: GraphTensors, name: str, maps: dict[str, LayerInfo], classes: int
) -> str:
    """From the pooled map back through no-ops and a 1x1 classifier convolution (class maps)."""
    name = _back_through_no_ops(graph, name, maps)
    info = maps.get(name)
    if info is None or info.map_shape is None or info.map_shape[0] != classes:
        return name
    node = graph.nodes[graph.producer[name]]
    if node.op_type in ACTIVATIONS and node.input[0] in graph.producer:
        node = graph.nodes[graph.producer[node.input[0]]]
    kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
    weight = graph.shapes.get(node.input[1]) if len(node.input) > 1 else None
    one_by_one = kernel == [1, 1] or (weight is not None and tuple(weight[2:]) == (1, 1))
    if node.op_type == "Conv" and one_by_one and node.input[0] in maps:
        return _back_through_no_ops(graph, str(node.input[0]), maps)
    return name


def _back_through_no_ops(graph: GraphTensors, name: str, maps: dict[str, LayerInfo]) -> str:
    while name in graph.producer:
        node = graph.nodes[graph.producer[name]]
        if node.op_type not in NO_OPS or not node.input or node.input[0] not in maps:
            return name
        name = str(node.input[0])
    return name
