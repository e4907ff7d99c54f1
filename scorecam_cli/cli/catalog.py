"""``scorecam models`` and ``scorecam layers``: what --model and --layer take, and what the tool
inferred of a model (classes, input channels, head: on stderr)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from scorecam_cli.cli.common import user_errors
from scorecam_cli.cli.escaping import escape_field
from scorecam_cli.cli.options import (
    HEAD_OPTION,
    LABELS_OPTION,
    MEAN_OPTION,
    STD_OPTION,
    model_spec,
    parse_input_size,
)
from scorecam_cli.cli.output import emit, protect_stdout

if TYPE_CHECKING:
    from scorecam_cli.layers import LayerInfo, LayerRef

log = logging.getLogger("scorecam_cli")


@click.command()
@click.argument("pattern", required=False)
@click.option(
    "-w",
    "--weights",
    default=None,
    metavar="FILE",
    help="List only the architectures this checkpoint fits, each built to its head and stem "
    "(what was inferred is said on stderr; RegNet is not checked).",
)
def models(pattern: str | None, weights: str | None) -> None:
    """List the model names --model takes (PATTERN: a substring or a glob; 'timm:GLOB' lists
    timm's models, e.g. 'timm:convnext*').

    --model also takes paths: a model folder (DIR, hf:DIR: a Hugging Face save_pretrained
    folder, extra 'hf'; timm:DIR: a timm save_for_hf folder), with its class names and
    preprocessing; FILE.onnx or onnx:FILE, an ONNX file explained in ONNX Runtime without
    PyTorch model code (Score-CAM methods only; extra 'fast'); and package.module:NAME for a
    model of your own."""
    from scorecam_cli.heads import Head
    from scorecam_cli.models import available_models, checkpoint_fits

    with user_errors():
        names = available_models(pattern)
        if weights is None:
            for name in names:
                click.echo(name)
            return
        for name, fit in checkpoint_fits(names, weights):
            click.echo(name)
            built = f"built with {fit.describe()}" if fit.describe() else "as built by default"
            head = (
                f"; head {Head.of('auto', fit.num_classes).describe()}" if fit.num_classes else ""
            )
            log.info("%s: fits %s, %s%s", name, weights, built, head)


@click.command()
@click.argument("model", default="efficientnet_lite0", metavar="MODEL|DIR|FILE.onnx")
@click.option(
    "--input-size",
    default=None,
    metavar="N|HxW",
    help="Dry-run input size. Default: the model's native size.",
)
@click.option("--all", "show_all", is_flag=True, help="Also list layers the tool cannot explain.")
@click.option(
    "-w",
    "--weights",
    default="none",
    show_default=True,
    help="As for run: a checkpoint file builds the architecture to fit it.",
)
@LABELS_OPTION
@MEAN_OPTION
@STD_OPTION
@HEAD_OPTION
def layers(
    model: str,
    input_size: str | None,
    show_all: bool,
    weights: str,
    labels: str | None,
    mean: str | None,
    std: str | None,
    head: str | None,
) -> None:
    """List MODEL's layers the tool can explain, with their map shapes; the default is marked.

    Output: one line per layer, tab-separated: name, map shape (C x h x w, for every layout),
    layout (nchw, nhwc, or tokens+P with P prefix tokens), and 'default' on the default.
    With --all, layers it cannot explain are listed too, with their raw shape and layout '-'.
    What the tool inferred of the model (classes, input channels, head) goes to stderr.
    For an ONNX file the layers are its graph's intermediate tensors, by name.
    """
    from dataclasses import replace

    from scorecam_cli.explainer import model_head, native_size_hint, output_width
    from scorecam_cli.layers import pick_default, trace_layers
    from scorecam_cli.models import describe, load_model_spec
    from scorecam_cli.models.sources import is_onnx

    protect_stdout()  # a model's own prints go to stderr
    asked = parse_input_size(input_size)
    spec = model_spec(model, weights, labels, mean, std)
    with user_errors():
        if is_onnx(model):
            infos, default = _onnx_layers(model, asked)
        else:
            loaded = load_model_spec(spec)
            size = asked or loaded.preprocessing.input_size
            channels, module = loaded.preprocessing.channels, loaded.torch_module()
            with native_size_hint(loaded), output_width(module) as width:
                infos = trace_layers(module, size, channels=channels)
            loaded = replace(loaded, num_classes=width[-1] if width else None)
            log.info("%s", describe(loaded, model_head(loaded, head or "auto")))
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
