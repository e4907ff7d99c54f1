"""``scorecam models`` and ``scorecam layers``: what --model and --layer take."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from scorecam_cli.cli.common import user_errors
from scorecam_cli.cli.options import parse_input_size
from scorecam_cli.cli.output import emit, escape_field, protect_stdout

if TYPE_CHECKING:
    from scorecam_cli.layers import LayerInfo, LayerRef


@click.command()
@click.argument("pattern", required=False)
def models(pattern: str | None) -> None:
    """List the model names --model takes (PATTERN: a substring or a glob; 'timm:GLOB' lists
    timm's models, e.g. 'timm:convnext*').

    --model also takes paths: FILE.onnx or onnx:FILE, an ONNX file explained in ONNX Runtime
    without PyTorch model code (Score-CAM methods only; extra 'fast'), and
    package.module:NAME for a model of your own."""
    from scorecam_cli.models import available_models

    with user_errors():
        names = available_models(pattern)
    for name in names:
        click.echo(name)


@click.command()
@click.argument("model", default="efficientnet_lite0", metavar="MODEL|FILE.onnx")
@click.option(
    "--input-size",
    default=None,
    metavar="N|HxW",
    help="Dry-run input size. Default: the model's native size.",
)
@click.option("--all", "show_all", is_flag=True, help="Also list layers the tool cannot explain.")
def layers(model: str, input_size: str | None, show_all: bool) -> None:
    """List MODEL's layers the tool can explain, with their map shapes; the default is marked.

    Output: one line per layer, tab-separated: name, map shape (C x h x w, for every layout),
    layout (nchw, nhwc, or tokens+P with P prefix tokens), and 'default' on the default.
    With --all, layers it cannot explain are listed too, with their raw shape and layout '-'.
    For an ONNX file the layers are its graph's intermediate tensors, by name.
    """
    from scorecam_cli.explainer import native_size_hint
    from scorecam_cli.layers import pick_default, trace_layers
    from scorecam_cli.models import load_model
    from scorecam_cli.models.sources import is_onnx

    protect_stdout()  # a model's own prints go to stderr
    asked = parse_input_size(input_size)
    with user_errors():
        if is_onnx(model):
            infos, default = _onnx_layers(model, asked)
        else:
            loaded = load_model(model, "none")
            module = loaded.torch_module()
            with native_size_hint(loaded):
                infos = trace_layers(module, asked or loaded.preprocessing.input_size)
            default = pick_default(infos, module).ref
    for info in infos:
        name = escape_field(str(info.ref))  # an ONNX file's tensor names are anyone's text
        if info.is_map:
            mark = "\tdefault" if info.ref == default else ""
            emit(f"{name}\t{shape_text(info.map_shape)}\t{info.layout}{mark}")
        elif show_all:
            emit(f"{name}\t{shape_text(info.shape[1:]) or '-'}\t-")


def _onnx_layers(path: str, asked: tuple[int, int] | None) -> tuple[list[LayerInfo], LayerRef]:
    """An ONNX file's tensors (LayerInfo, in the graph's order) and the default's ref."""
    from scorecam_cli.errors import UnknownLayer
    from scorecam_cli.models import load_model
    from scorecam_cli.models.onnx_source import onnx_graph, onnx_input_size
    from scorecam_cli.onnx_layers import graph_layers

    graph = onnx_graph(load_model(path, "none"))
    layers = graph_layers(graph, onnx_input_size(graph, asked))
    if layers.default is None:
        raise UnknownLayer(f"{path}: the graph has no tensor the tool can read as maps")
    return layers.infos, layers.default.ref


def shape_text(shape: tuple[int, ...] | None) -> str:
    """A map's (C, h, w) as ``CxHxW``; empty for None."""
    return "x".join(str(v) for v in shape) if shape else ""
