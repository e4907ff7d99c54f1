"""``scorecam eval``: faithfulness metrics (and the sanity check) of each method's maps."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from typing import Any

import click

from scorecam_cli.choices import METHODS, SCORE_METHODS
from scorecam_cli.cli.common import Fatal, user_errors
from scorecam_cli.cli.eval_boxes import eval_localisation, refuse_with_boxes
from scorecam_cli.cli.options import (
    KEEP_ASPECT_OPTION,
    cam_options,
    decode_workers,
    model_options,
    workers_option,
)
from scorecam_cli.cli.output import emit, emit_rows, event_reporter, progress, protect_stdout
from scorecam_cli.cli.scale import shard_option
from scorecam_cli.spec import CamConfig, ComputeSpec, ExplainSpec, LayerSpec, ModelSpec

log = logging.getLogger("scorecam_cli")


@click.command(name="eval")
@click.argument("inputs", nargs=-1, required=True)
@model_options
@click.option(
    "--method",
    "methods",
    type=click.Choice(METHODS),
    multiple=True,
    help="A method to measure (repeatable). Default: scorecam and gradcam (an ONNX file: "
    "scorecam).",
)
@click.option(
    "-c",
    "--class",
    "class_names",
    multiple=True,
    help="Judge every image on this class (index or name). Default: its top-1 class.",
)
@KEEP_ASPECT_OPTION
@cam_options
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Deletion/insertion steps (at most the input size's pixel count).",
)
@click.option(
    "--sanity",
    is_flag=True,
    help="Also re-run on copies of the model randomised layer by layer from the top "
    "(cascading randomisation) and report the Spearman rank correlation with the original maps.",
)
@click.option(
    "--format",
    "record_format",
    type=click.Choice(["table", "jsonl", "csv"]),
    default="table",
    show_default=True,
    help="A table, or one JSON object / CSV row per method.",
)
@click.option(
    "--boxes",
    "box_file",
    default=None,
    metavar="FILE",
    help="Measure localisation against these boxes instead of faithfulness (see above).",
)
@click.option(
    "--tolerance",
    type=click.IntRange(0),
    default=15,
    show_default=True,
    metavar="PX",
    help="With --boxes: the pointing game's tolerance in pixels.",
)
@click.option("--image-batch", type=click.IntRange(1), default=8, show_default=True)
@workers_option
@shard_option
@click.pass_context
def eval_command(
    ctx: click.Context,
    inputs: tuple[str, ...],
    model: ModelSpec,
    layer: LayerSpec,
    input_size: tuple[int, int] | None,
    methods: tuple[str, ...],
    class_names: tuple[str, ...],
    keep_aspect: bool,
    steps: int,
    sanity: bool,
    record_format: str,
    box_file: str | None,
    tolerance: int,
    image_batch: int,
    workers: int | None,
    shard: Any,
    cam: CamConfig,
    compute: ComputeSpec,
) -> None:
    """Measure how faithful each method's maps are on INPUTS.

    \b
    Average Drop %: 100 * mean max(0, Y - O) / Y, where Y is the class probability of the image
      and O that of the image multiplied by its min-max normalised map. Lower is better.
    Increase in Confidence %: 100 * share of images with O > Y. Higher is better.
    Deletion AUC: remove pixels (set to the mean colour) most salient first, in --steps steps;
      area under the class probability over the fraction removed. Lower is better.
    Insertion AUC: start from a Gaussian-blurred copy (kernel 11, sigma 5) and put the original
      pixels back, most salient first; area under the probability curve. Higher is better.

    \b
    With --boxes FILE (CSV image,class,x0,y0,x1,y1 or a folder of Pascal VOC .xml files; pixels
    of the original image, x1 and y1 exclusive), every image is judged on its boxes' classes
    (one map per image and class, at the image's own size) for localisation instead of the
    metrics above (run eval without --boxes for those):
    Pointing game: share of maps whose maximum lies within --tolerance px of a box of the
      class (0: inside one). Higher is better.
    Energy-based pointing game: share of the min-max normalised map's energy inside the union
      of the class's boxes. Higher is better.
    Box area share: share of the image those boxes cover: the chance level of both.
    """
    from scorecam_cli.evaluation import evaluate_methods
    from scorecam_cli.events import RunTally
    from scorecam_cli.explainer import build_explainer
    from scorecam_cli.images import find_inputs
    from scorecam_cli.models.sources import is_onnx
    from scorecam_cli.shards import in_shard
    from scorecam_cli.writing import DecodeOptions

    if box_file is not None:
        refuse_with_boxes(class_names, sanity)
    protect_stdout()  # a model's own prints go to stderr
    # An ONNX file has no gradients: Score-CAM alone, unless asked (then refused in one line).
    chosen = methods or (("scorecam",) if is_onnx(model.source) else ("scorecam", "gradcam"))
    # The explainer's own method decides whether a backend is loaded for the masked passes.
    first = next((m for m in chosen if m in SCORE_METHODS), chosen[0])
    spec = ExplainSpec(
        model, layer, dataclasses.replace(cam, method=first), compute, input_size,
        class_names[:1], keep_aspect=keep_aspect,
    )  # fmt: skip
    with user_errors():
        explainer = build_explainer(spec)
    configs = [dataclasses.replace(explainer.config, method=method) for method in chosen]
    if box_file is not None:
        decode = DecodeOptions(image_batch, decode_workers(workers, inputs, image_batch))
        eval_localisation(
            ctx,
            explainer,
            configs,
            inputs,
            shard,
            box_file=box_file,
            tolerance=tolerance,
            record_format=record_format,
            decode=decode,
        )
    tally = RunTally()

    with progress() as bar:
        on_event = event_reporter(bar, tally)

        decode = DecodeOptions(image_batch, decode_workers(workers, inputs, image_batch))
        with user_errors():
            reports = evaluate_methods(
                explainer,
                configs,
                in_shard(find_inputs(inputs, sys.stdin), shard),
                steps=steps,
                sanity=sanity,
                decode=decode,
                on_event=on_event,
            )
    if not reports and shard is not None and not tally.inputs:  # as run: an empty shard is no error
        log.info("no input of %s falls in shard %s", " ".join(inputs), shard)
        ctx.exit(0)
    if not reports:
        raise Fatal("no input could be read")
    rows = [_report_row(report) for report in reports]
    if record_format == "jsonl":
        for report, row in zip(reports, rows, strict=True):
            emit(json.dumps({**row, "sanity": _sanity_steps(report)} if sanity else row))
    else:
        emit_rows(rows, csv=record_format == "csv")
    ctx.exit(1 if tally.failed else 0)


def _report_row(report: Any) -> dict[str, Any]:
    f = report.faithfulness
    row: dict[str, Any] = {
        "method": report.method,
        "images": f.images,
        "average_drop_percent": round(f.average_drop, 3),
        "increase_in_confidence_percent": round(f.increase_in_confidence, 3),
        "deletion_auc": round(f.deletion_auc, 4),
        "insertion_auc": round(f.insertion_auc, 4),
    }
    if report.sanity:
        row["sanity_spearman_fully_random"] = round(report.sanity[-1].correlation, 4)
    return row


def _sanity_steps(report: Any) -> list[dict[str, Any]]:
    """The sanity check's steps as JSON: which module, how many of all, the mean correlation."""
    return [
        {
            "module": step.module,
            "randomised": step.randomised,
            "of": step.total,
            "spearman": round(step.correlation, 4),
        }
        for step in report.sanity
    ]
