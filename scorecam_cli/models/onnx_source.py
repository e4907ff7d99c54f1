"""ONNX files as a model source (``--model FILE.onnx`` or ``onnx:FILE``; extra ``fast``).

The file is read and checked with ``onnx`` (never run here: :mod:`scorecam_cli.onnx_run` opens it
in ONNX Runtime). Everything in it is untrusted, and each problem is one line (exit 2): a path that
is no regular file, a file over protobuf's 2 GB limit or that does not parse as a model, external
data outside the file's folder (or missing, or shorter than the tensors it should hold), a graph
that takes no single float image tensor, and one without (N, C) outputs.

What the graph says is used as it is: the input's name, its layout (NCHW, or NHWC when the graph
transposes it to NCHW first or holds the 3 colour channels last) and its size (a dynamic size needs
``--input-size``); the logits are the first (N, C) output; class names come from the metadata entry
``labels`` (:data:`LABELS_KEY`) when it holds a JSON list of names (or an object of index -> name,
as Hugging Face's ``id2label``), one per output. The file carries no normalisation: ImageNet's mean
and std are used (said on stderr when the model is opened).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scorecam_cli.errors import BackendUnavailable, BadInputSize, BadModelFile
from scorecam_cli.layouts import NCHW, NHWC
from scorecam_cli.models.base import LoadedModel, Preprocessing
from scorecam_cli.models.onnx_model import FLOAT_TYPES, OnnxModel

log = logging.getLogger("scorecam_cli")

MAX_ONNX_BYTES = 2**31  # protobuf's limit for one message; bigger weights live in external data
SMALL_EXTERNAL = 2**16  # external tensors up to this many bytes are read into the graph: axes,
# shapes and other constants that shape inference (ours, and ONNX Runtime's for a graph given
# as bytes) must see
LABELS_KEY = "labels"  # metadata_props entry with the class names (a JSON list)
WEIGHTS = "in the file"  # what LoadedModel.weights says of an ONNX file
INSTALL_HINT = "pip install 'scorecam-cli[fast]'"


def load_onnx(target: str, weights: str) -> LoadedModel:
    """The ONNX file ``target`` as a loaded model whose runtime is an :class:`OnnxModel`.

    ``weights`` must be DEFAULT or none: the file holds its weights. Raises BadModelFile (one
    line) for anything the file gets wrong, BackendUnavailable when ``onnx`` is not installed.
    """
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable(f"{target}: reading ONNX files needs {INSTALL_HINT}") from None
    if weights not in ("DEFAULT", "none"):
        raise BadModelFile(f"{target}: an ONNX file holds its own weights; leave out --weights")
    path = Path(os.path.abspath(target))
    _check_file(target, path)
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and whatever else a broken file raises
        raise BadModelFile(f"{target}: not an ONNX model ({_reason(exc)})") from None
    if proto.ir_version < 1 or not proto.graph.node or not proto.graph.output:
        raise BadModelFile(f"{target}: not an ONNX model (no graph with nodes and outputs)")
    _check_external_data(target, proto.graph, path.parent)
    _read_small_external_data(proto.graph, path.parent)
    graph = _read_graph(target, path, proto)
    height, width = graph.input_dims
    fixed = (height, width) if height is not None and width is not None else None
    return LoadedModel(
        name=str(path),
        module=graph,
        preprocessing=Preprocessing(input_size=fixed) if fixed else Preprocessing(),
        categories=_labels(target, proto, graph.num_classes),
        weights=WEIGHTS,
        num_classes=graph.num_classes,
    )


def onnx_graph(loaded: LoadedModel) -> OnnxModel:
    """The ONNX graph of a model loaded from an ONNX file (TypeError for a torch model)."""
    if not isinstance(loaded.module, OnnxModel):
        raise TypeError(f"{loaded.name} is no ONNX file")
    return loaded.module


def onnx_input_size(model: OnnxModel, asked: tuple[int, int] | None) -> tuple[int, int]:
    """The input size (H, W): the graph's, or ``asked`` (``--input-size``) where the graph leaves
    a side dynamic. BadInputSize (one line) for a dynamic size without ``asked``, or an
    ``asked`` size that the graph's fixed sides do not allow."""
    height, width = model.input_dims
    graph = f"{height or 'H'}x{width or 'W'}"
    if asked is None:
        if height is None or width is None:
            raise BadInputSize(
                f"{model.path}: the graph takes any input size ({graph}); give --input-size N "
                "or HxW"
            )
        return height, width
    if any(
        side is not None and side != given
        for side, given in zip((height, width), asked, strict=True)
    ):
        raise BadInputSize(
            f"{model.path}: the graph takes {graph} images, not {asked[0]}x{asked[1]}; leave "
            "out --input-size"
        )
    return asked


def _check_file(target: str, path: Path) -> None:
    """BadModelFile unless ``path`` is a regular file of 1 byte to MAX_ONNX_BYTES."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadModelFile(f"{target}: no such ONNX file") from None
    except OSError as exc:
        raise BadModelFile(f"{target}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadModelFile(f"{target}: is a folder, not an ONNX file")
    if not stat.S_ISREG(info.st_mode):
        raise BadModelFile(f"{target}: not a regular file (FIFOs and devices are never read)")
    if info.st_size == 0:
        raise BadModelFile(f"{target}: not an ONNX model (the file is empty)")
    if info.st_size > MAX_ONNX_BYTES:
        raise BadModelFile(
            f"{target}: too large for one ONNX file ({info.st_size / 2**30:.1f} GiB; protobuf "
            "reads at most 2 GiB): save its weights as external data beside it"
        )


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return repr(lines[0])[1:-1][:200] if lines else type(exc).__name__


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph``: initializers, sparse ones, node attributes, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*subgraphs, *attribute.graphs]:
                yield from _tensors(subgraph)


def _check_external_data(target: str, graph: Any, folder: Path) -> None:
    """BadModelFile unless every external tensor's file lies inside ``folder`` (after symlinks)
    as a regular file that holds its bytes (offset + length)."""
    import onnx

    root = folder.resolve()
    for tensor in _tensors(graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        where = f"{target}: tensor {tensor.name!r} keeps its data in {location!r}"
        file = (root / location).resolve()
        if not location or Path(location).is_absolute() or not file.is_relative_to(root):
            raise BadModelFile(f"{where}, outside the model's folder; it must lie beside the file")
        try:
            size = file.stat().st_size if file.is_file() else -1
            offset, length = int(entries.get("offset", 0)), int(entries.get("length", -1))
        except (OSError, ValueError):
            size, offset, length = -1, 0, -1
        if size < 0:
            raise BadModelFile(f"{where}, which is missing or no regular file")
        if offset < 0 or offset + max(length, 0) > size:
            raise BadModelFile(f"{where}, which is too short for it")


def _read_small_external_data(graph: Any, folder: Path) -> None:
    """Read the data of external tensors of at most SMALL_EXTERNAL bytes into ``graph`` (their
    files were checked to lie in ``folder``)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_tensor

    for tensor in _tensors(graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = ExternalDataInfo(tensor)
        length = info.length
        if length is None:
            length = (folder / info.location).stat().st_size - (info.offset or 0)
        if length <= SMALL_EXTERNAL:
            load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.ClearField("external_data")


def _dims(value: Any) -> list[int | None] | None:
    """A ValueInfo's dimensions (None where symbolic or unknown), or None without a shape."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type" or not value.type.tensor_type.HasField("shape"):
        return None
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _read_graph(target: str, path: Path, proto: Any) -> OnnxModel:
    """The image input and the logits output of ``proto`` (one-line errors for anything else)."""
    graph = proto.graph
    constants = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1:
        names = ", ".join(repr(value.name) for value in inputs[:5]) or "none"
        raise BadModelFile(
            f"{target}: the graph takes {len(inputs)} inputs ({names}); scorecam feeds one "
            "image tensor"
        )
    image = inputs[0]
    dims = _dims(image)
    element = image.type.tensor_type.elem_type
    if dims is None or len(dims) != 4 or element not in FLOAT_TYPES:
        shape = "unknown shape" if dims is None else f"{len(dims)} dimensions"
        raise BadModelFile(
            f"{target}: its input {image.name!r} ({shape}, element type {element}) is no float "
            "image batch (N, 3, H, W) or (N, H, W, 3)"
        )
    layout = _input_layout(target, graph, image.name, dims)
    channels, height, width = (dims[1], *dims[2:]) if layout == NCHW else (dims[3], *dims[1:3])
    if channels not in (3, None):
        raise BadModelFile(
            f"{target}: its input {image.name!r} has {channels} channels; scorecam feeds RGB "
            "images (3 channels)"
        )
    logits, classes = _logits_output(target, proto)
    return OnnxModel(
        path=path,
        proto=proto,
        input_name=image.name,
        input_layout=layout,
        input_dims=(height, width),
        input_type=element,
        batch=dims[0],
        logits_name=logits.name,
        logits_type=logits.type.tensor_type.elem_type,
        num_classes=classes,
    )


def _input_layout(target: str, graph: Any, name: str, dims: list[int | None]) -> str:
    """NCHW or NHWC, from the graph: what first reads the input (a Conv reads NCHW; a Transpose
    (0, 3, 1, 2) makes NCHW of NHWC), else where its 3 colour channels are."""
    for node in graph.node:
        if name not in node.input:
            continue
        if node.op_type == "Conv" and node.input[0] == name:
            return NCHW
        if node.op_type == "Transpose":
            perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
            if perm == [[0, 3, 1, 2]]:
                return NHWC
    if dims[1] == 3 or (dims[1] is None and dims[3] != 3):
        return NCHW
    if dims[3] == 3:
        return NHWC
    raise BadModelFile(
        f"{target}: cannot tell which dimension of its input {name!r} "
        f"({'x'.join(str(d or '?') for d in dims)}) holds the colour channels"
    )


def _logits_output(target: str, proto: Any) -> tuple[Any, int | None]:
    """The first graph output of shape (N, C) in a float type, and C (None: dynamic).

    Outputs that declare no shape get the one shape inference gives them.
    """
    import onnx

    outputs = list(proto.graph.output)
    if any(_dims(output) is None for output in outputs):
        try:
            inferred = onnx.shape_inference.infer_shapes(proto).graph.output
            pairs = zip(outputs, inferred, strict=True)
            outputs = [new if _dims(old) is None else old for old, new in pairs]
        except Exception:  # keep what the file declares; the check below names the outputs
            pass
    for output in outputs:
        dims = _dims(output)
        if dims is not None and len(dims) == 2:
            if output.type.tensor_type.elem_type not in FLOAT_TYPES:
                raise BadModelFile(f"{target}: its output {output.name!r} holds no float scores")
            return output, dims[1]
    shapes = ", ".join(f"{o.name!r} {_shape_text(_dims(o))}" for o in outputs[:5])
    raise BadModelFile(
        f"{target}: no output of shape (N, classes) ({shapes}); scorecam needs the logits"
    )


def _shape_text(dims: list[int | None] | None) -> str:
    if dims is None:
        return "(unknown shape)"
    return "(" + ", ".join("N" if d is None else str(d) for d in dims) + ")"


def _labels(target: str, proto: Any, classes: int | None) -> list[str] | None:
    """Class names from the metadata entry LABELS_KEY, or None; a bad entry is one warning."""
    text = next((p.value for p in proto.metadata_props if p.key == LABELS_KEY), None)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):  # {"0": "cat", ...}: Hugging Face's id2label
        names = {str(key): name for key, name in value.items()}
        value = [names.get(str(index)) for index in range(len(names))]
    if (
        not isinstance(value, list)
        or not all(isinstance(name, str) for name in value)
        or (classes is not None and len(value) != classes)
    ):
        log.warning(
            "warning: %s: metadata %r is no JSON list of %s class names; classes have no names",
            target,
            LABELS_KEY,
            classes if classes is not None else "the",
        )
        return None
    return list(value)
