"""``scorecam models`` and ``scorecam layers``: what --model and --layer take."""

from __future__ import annotations

import click

from scorecam_cli.cli.common import user_errors
from scorecam_cli.cli.options import parse_input_size
from scorecam_cli.cli.output import emit, protect_stdout


@click.command()
@click.argument("pattern", required=False)
def models(pattern: str | None) -> None:
    """List the model names --model takes (PATTERN: a substring or a glob; 'timm:GLOB' lists
    timm's models, e.g. 'timm:convnext*')."""
    from scorecam_cli.models import available_models

    with user_errors():
        names = available_models(pattern)
    for name in names:
        click.echo(name)


@click.command()
@click.argument("model", default="efficientnet_lite0")
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
    """
    from scorecam_cli.explainer import native_size_hint
    from scorecam_cli.layers import pick_default, trace_layers
    from scorecam_cli.models import load_model

    protect_stdout()  # a model's own prints go to stderr
    asked = parse_input_size(input_size)
    with user_errors():
        loaded = load_model(model, "none")
        with native_size_hint(loaded):
            infos = trace_layers(loaded.module, asked or loaded.preprocessing.input_size)
        default = pick_default(infos, loaded.module).ref
    for info in infos:
        if info.is_map:
            mark = "\tdefault" if info.ref == default else ""
            emit(f"{info.ref}\t{shape_text(info.map_shape)}\t{info.layout}{mark}")
        elif show_all:
            emit(f"{info.ref}\t{shape_text(info.shape[1:]) or '-'}\t-")


def shape_text(shape: tuple[int, ...] | None) -> str:
    """A map's (C, h, w) as ``CxHxW``; empty for None."""
    return "x".join(str(v) for v in shape) if shape else ""
