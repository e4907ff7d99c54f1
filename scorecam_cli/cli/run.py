"""``scorecam run``: explain images and write overlays and raw maps, one stdout record per map."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from scorecam_cli.choices import METHODS
from scorecam_cli.cli.common import Fatal, UsageFailure, user_errors
from scorecam_cli.cli.escaping import escape_field, is_utf8
from scorecam_cli.cli.options import (
    KEEP_ASPECT_OPTION,
    METHOD_HELP,
    cam_options,
    decode_workers,
    model_options,
    workers_option,
)
from scorecam_cli.cli.output import emit, progress, protect_stdout, report_failure
from scorecam_cli.cli.report import write_report
from scorecam_cli.cli.scale import ScaleOptions, scale_options
from scorecam_cli.spec import CamConfig, ComputeSpec, ExplainSpec, LayerSpec, ModelSpec

if TYPE_CHECKING:
    from scorecam_cli.events import MapRecord
    from scorecam_cli.stages import StopRequest

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
@KEEP_ASPECT_OPTION
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
@click.option(
    "--max-file-mb",
    type=click.FloatRange(0, min_open=True),
    default=256,
    show_default=True,
    help="Refuse input files larger than this (MB).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=50_000_000,
    show_default=True,
    help="Refuse images whose header announces more pixels (decompression bombs).",
)
@click.option(
    "-0",
    "--null",
    is_flag=True,
    help="Records end with NUL, not newline (for xargs -0); '-' reads NUL-separated paths.",
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
@workers_option
@scale_options
@click.pass_context
def run(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: Path,
    model: ModelSpec,
    layer: LayerSpec,
    input_size: tuple[int, int] | None,
    method: str,
    class_names: tuple[str, ...],
    top_k: int,
    keep_aspect: bool,
    record_format: str,
    colormap: str,
    alpha: float,
    save_heatmap: bool,
    skip_existing: bool,
    overwrite: bool,
    fail_fast: bool,
    make_report: bool,
    image_batch: int,
    workers: int | None,
    max_file_mb: float,
    max_pixels: int,
    null: bool,
    cam: CamConfig,
    compute: ComputeSpec,
    scale: ScaleOptions,
) -> None:
    """Explain images and write overlay PNGs and raw .npy maps under OUTPUT.

    INPUTS are image files, folders (searched recursively, in sorted order) or '-' for
    newline-separated paths on stdin. Each map gives <name>.c<class>.overlay.png and
    <name>.c<class>.npy (float32, the image's height x width, not normalised).

    Records of paths and TSV escape backslash, tab, newline and other control characters and
    bytes that are not UTF-8 (\\, \\t, \\n, \\xHH); JSON records are ASCII when a name is not
    UTF-8. With -0 paths are written as they are, each ended by a NUL byte.

    Exit status: 0 when every input succeeded, 1 when any failed, 2 for usage errors, 130 when
    interrupted (every map written so far is reported first), 141 when stdout was closed.
    """
    from scorecam_cli import render
    from scorecam_cli.engines import EngineJob, engine
    from scorecam_cli.events import Explained, RunTally, Skipped
    from scorecam_cli.images import IMAGE_SUFFIXES, Limits, find_inputs
    from scorecam_cli.shards import in_shard
    from scorecam_cli.stages import StopRequest
    from scorecam_cli.writing import RunOptions

    protect_stdout()
    try:
        render.colormap_id(colormap)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if not math.isfinite(alpha):
        raise UsageFailure(f"--alpha must be a number between 0 and 1, got {alpha}")
    if skip_existing and overwrite:
        raise click.UsageError("give either --skip-existing or --overwrite, not both")
    if class_names and top_k != 1:
        raise click.UsageError("give either --class or --top-k, not both")
    check_writable(output, scale.run_options()["manifest_name"])
    spec = ExplainSpec(
        model, layer, replace(cam, method=method), compute, input_size, class_names, top_k,
        keep_aspect,
    )  # fmt: skip
    chosen = engine(scale.engine)
    with user_errors():
        explainer = chosen.driver_explainer(spec)
    limits = Limits(
        max_file_bytes=int(max_file_mb * 2**20),
        max_pixels=max_pixels,
        batch_pixels=max(max_pixels, Limits().batch_pixels),
    )
    options = RunOptions(
        output_dir=output,
        colormap=colormap.lower(),
        alpha=alpha,
        save_heatmap=save_heatmap,
        skip_existing=skip_existing,
        overwrite=overwrite,
        images_per_batch=image_batch,
        workers=decode_workers(workers, inputs, image_batch),
        limits=limits,
        fail_fast=fail_fast,
        **scale.run_options(),
    )
    job = EngineJob(spec, explainer, options, scale.cluster())
    tally = RunTally()
    stop = StopRequest()
    end = "\0" if null else "\n"
    inputs_found = in_shard(find_inputs(inputs, sys.stdin, null=null), scale.shard)
    with progress() as bar, _interrupts(stop), user_errors():
        for event in chosen.run(job, inputs_found, stop):
            bar.update(1)
            tally.add(event)
            if isinstance(event, Explained):
                for record in event.records:
                    emit(format_record(record, record_format, null), end)
            elif not isinstance(event, Skipped):
                bar.clear()
                report_failure(event)
    log.info("%s", tally.summary())
    if stop.requested:
        log.warning("interrupted: the maps above were written; --skip-existing resumes the run")
        ctx.exit(130)
    if scale.shard is None and not tally.inputs:
        raise Fatal(
            f"no input images in {' '.join(inputs)} (image files end in one of: "
            f"{', '.join(sorted(s.lstrip('.') for s in IMAGE_SUFFIXES))})"
        )
    if make_report:
        log.info("report: %s", write_report(output, limits=limits))
    ctx.exit(1 if tally.failed else 0)


@contextmanager
def _interrupts(stop: StopRequest) -> Iterator[None]:
    """Ctrl-C (the first or any later one) asks the run to stop: it raises KeyboardInterrupt
    only while that loses nothing (a batch is decoded or explained, ``stop.computing``), never
    while a map is written or reported, so every map written is reported before the end."""

    def on_sigint(signum: int, frame: object) -> None:
        stop.requested = True
        if stop.computing:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_writable(output: Path, manifest_name: str) -> None:
    """Fail before any model pass when OUT cannot be written to (nothing is created here): a
    probe file in OUT when it exists, else the nearest existing folder above it must be one we
    may write to; OUT's manifest must be no symlink, FIFO or folder."""
    import os
    import tempfile

    from scorecam_cli.errors import OutputWrite
    from scorecam_cli.manifest import check_manifest_target

    try:
        check_manifest_target(output / manifest_name)
    except OutputWrite as exc:
        raise Fatal(f"cannot write to the output folder {output}: {exc}") from None
    try:
        if output.is_dir():
            with tempfile.NamedTemporaryFile(dir=output, prefix=".scorecam-check-"):
                pass
            return
        ancestor = output.absolute()
        while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise NotADirectoryError(20, f"{ancestor} is not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PermissionError(13, f"Permission denied in {ancestor}")
    except OSError as exc:
        raise Fatal(f"cannot write to the output folder {output}: {exc.strerror or exc}") from None


def format_record(record: MapRecord, record_format: str, null: bool = False) -> str:
    """One record, always one line: paths and TSV fields escaped (as raw paths with ``null``),
    JSON valid (ASCII when a name holds bytes that are not UTF-8)."""
    if record_format == "paths":
        return record.overlay if null else escape_field(record.overlay)
    values = asdict(record)
    if record_format == "jsonl":
        text = json.dumps(values, ensure_ascii=False, allow_nan=False)
        return text if is_utf8(text) else json.dumps(values, allow_nan=False)
    return "\t".join("" if v is None else escape_field(str(v)) for v in values.values())
