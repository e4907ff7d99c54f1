"""``scorecam run``: explain images and write overlays and raw maps, one stdout record per map."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scorecam_cli.choices import METHODS
from scorecam_cli.cli.common import (
    METHOD_HELP,
    UsageFailure,
    cam_options,
    emit,
    model_options,
    progress,
    report_failure,
)
from scorecam_cli.cli.report import write_report
from scorecam_cli.cli.scale import ScaleOptions, driver_explainer, events, scale_options

if TYPE_CHECKING:
    from scorecam_cli.pipeline import MapRecord

log = logging.getLogger("scorecam_cli")


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("scorecam-out"),
    show_default=True,
    help="Output folder; outputs mirror the inputs' relative paths.",
)
@model_options
@click.option("--method", type=click.Choice(METHODS), default="scorecam", help=METHOD_HELP)
@click.option(
    "-c",
    "--class",
    "class_names",
    multiple=True,
    help="Target class, by index or name (repeatable). Default: the top-1 class.",
)
@click.option("-k", "--top-k", type=click.IntRange(1), default=1, help="Explain the top K classes.")
@cam_options
@click.option(
    "--format",
    "record_format",
    type=click.Choice(["paths", "jsonl", "tsv"]),
    default="paths",
    show_default=True,
    help="stdout record per written map: the overlay path, a JSON object, or tab-separated.",
)
@click.option("--colormap", default="jet", show_default=True, help="Any OpenCV colour map name.")
@click.option(
    "--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heat opacity."
)
@click.option("--heatmap", "save_heatmap", is_flag=True, help="Also write the bare heatmap PNG.")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose outputs exist (resume).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first input that fails.")
@click.option("--report", "make_report", is_flag=True, help="Write OUTPUT/report.html at the end.")
@click.option(
    "--image-batch",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Images explained together.",
)
@click.option(
    "--workers", type=click.IntRange(0), default=1, show_default=True, help="Decoding processes."
)
@scale_options
@click.pass_context
def run(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: Path,
    model: str,
    weights: str,
    layer: str | None,
    input_size: str | None,
    method: str,
    class_names: tuple[str, ...],
    top_k: int,
    record_format: str,
    colormap: str,
    alpha: float,
    save_heatmap: bool,
    skip_existing: bool,
    overwrite: bool,
    fail_fast: bool,
    make_report: bool,
    image_batch: int,
    workers: int,
    **opts: Any,
) -> None:
    """Explain images and write overlay PNGs and raw .npy maps under OUTPUT.

    INPUTS are image files, folders (searched recursively, in sorted order) or '-' for
    newline-separated paths on stdin. Each map gives <name>.c<class>.overlay.png and
    <name>.c<class>.npy (float32, the image's height x width, not normalised).

    Exit status: 0 when every input succeeded, 1 when any failed, 2 for usage errors.
    """
    from scorecam_cli import render
    from scorecam_cli.images import find_inputs
    from scorecam_cli.pipeline import Explained, RunOptions, Skipped

    try:
        render.colormap_id(colormap)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if skip_existing and overwrite:
        raise click.UsageError("give either --skip-existing or --overwrite, not both")
    scale = ScaleOptions.pop(opts)
    rebuild: dict[str, Any] = dict(
        model=model,
        weights=weights,
        layer=layer,
        input_size=input_size,
        method=method,
        class_names=class_names,
        top_k=top_k,
        opts=opts,
    )
    explainer = driver_explainer(**rebuild, scale=scale)
    options = RunOptions(
        output_dir=output,
        colormap=colormap.lower(),
        alpha=alpha,
        save_heatmap=save_heatmap,
        skip_existing=skip_existing,
        overwrite=overwrite,
        images_per_batch=image_batch,
        workers=workers,
        **scale.run_options(),
    )
    counts = {"maps": 0, "failed": 0, "skipped": 0, "passes": 0, "saved": 0}
    with progress() as bar:
        for event in events(scale, explainer, find_inputs(inputs, sys.stdin), options, rebuild):
            bar.update(1)
            if isinstance(event, Explained):
                for record in event.records:
                    emit(format_record(record, record_format))
                counts["maps"] += len(event.records)
                counts["passes"] += event.records[0].forward_passes if event.records else 0
                counts["saved"] += event.records[0].forward_passes_saved if event.records else 0
            elif isinstance(event, Skipped):
                counts["skipped"] += 1
            else:
                counts["failed"] += 1
                bar.clear()
                report_failure(event)
                if fail_fast:
                    break
    log.info(
        "%(maps)d maps written, %(failed)d inputs failed, %(skipped)d skipped; masked forward "
        "passes: %(passes)d run, %(saved)d saved by sharing identical masks",
        counts,
    )
    if make_report:
        log.info("report: %s", write_report(output))
    ctx.exit(1 if counts["failed"] else 0)


def format_record(record: MapRecord, record_format: str) -> str:
    if record_format == "paths":
        return record.overlay
    values = asdict(record)
    if record_format == "jsonl":
        return json.dumps(values, ensure_ascii=False)
    return "\t".join("" if v is None else str(v) for v in values.values())
