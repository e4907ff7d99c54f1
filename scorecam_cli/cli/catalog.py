"""``scorecam models`` and ``scorecam layers``: what --model and --layer take."""

from __future__ import annotations

import click

from scorecam_cli.cli.common import shape_text, user_errors


@click.command()
@click.argument("pattern", required=False)
def models(pattern: str | None) -> None:
    """List the model names --model takes (PATTERN: a substring or a glob)."""
    from scorecam_cli.models import available_models

    for name in available_models(pattern):
        click.echo(name)


@click.command()
@click.argument("model", default="efficientnet_lite0")
@click.option("--input-size", type=click.IntRange(16), default=None, help="Dry-run input size.")
@click.option("--all", "show_all", is_flag=True, help="Also list layers whose output is no map.")
def layers(model: str, input_size: int | None, show_all: bool) -> None:
    """List MODEL's layers with their output shapes (K x h x w); the default is marked.

    Output: one line per layer, tab-separated: name, shape, and 'default' on the default.
    """
    from scorecam_cli.layers import trace_layers
    from scorecam_cli.models import load_model

    with user_errors():
        loaded = load_model(model, "none")
        size = (input_size, input_size) if input_size else loaded.preprocessing.input_size
        infos = trace_layers(loaded.module, size)
    maps = [info for info in infos if info.is_map]
    default = maps[-1].ref if maps else None
    for info in infos if show_all else maps:
        mark = "\tdefault" if info.ref == default else ""
        click.echo(f"{info.ref}\t{shape_text(info.shape) or '-'}{mark}")
