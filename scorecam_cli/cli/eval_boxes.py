"""``scorecam eval --boxes``: the localisation metrics of each method's maps against box files
(the library half is :mod:`scorecam_cli.localisation_eval`)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from scorecam_cli.cli.common import Fatal, UsageFailure, user_errors
from scorecam_cli.cli.escaping import escape_line
from scorecam_cli.cli.output import emit, emit_rows, event_reporter, progress

if TYPE_CHECKING:
    from scorecam_cli.cam import CamConfig
    from scorecam_cli.explainer import Explainer
    from scorecam_cli.localisation_eval import LocalisationReport
    from scorecam_cli.shards import Shard
    from scorecam_cli.writing import DecodeOptions

log = logging.getLogger("scorecam_cli")


def refuse_with_boxes(class_names: Sequence[str], sanity: bool) -> None:
    """Usage errors for the options that --boxes replaces."""
    if class_names:
        raise UsageFailure("--class and --boxes: with --boxes the classes are the boxes' own")
    if sanity:
        raise UsageFailure("--sanity and --boxes: run the sanity check without --boxes")


def eval_localisation(
    ctx: click.Context,
    explainer: Explainer,
    configs: Sequence[CamConfig],
    inputs: Sequence[str],
    shard: Shard | None,
    *,
    box_file: str,
    tolerance: float,
    record_format: str,
    decode: DecodeOptions,
) -> NoReturn:
    """Score every method's maps of INPUTS against ``box_file``; print one row per method and
    exit (1 when an input failed or none was scored)."""
    from scorecam_cli.events import RunTally
    from scorecam_cli.images import find_inputs
    from scorecam_cli.localisation_eval import evaluate_localisation, matched_keys, model_boxes
    from scorecam_cli.shards import in_shard

    with user_errors():
        boxes = model_boxes(box_file, explainer)
    for line in boxes.warnings:
        _warn(line)
    used: set[str] = set()
    tally = RunTally()

    with progress() as bar:
        on_event = event_reporter(bar, tally)

        def on_warning(line: str) -> None:
            bar.clear()
            _warn(line)

        found = matched_keys(find_inputs(inputs, sys.stdin), boxes, used)
        with user_errors():
            reports = evaluate_localisation(
                explainer,
                configs,
                in_shard(found, shard),
                boxes,
                tolerance=tolerance,
                decode=decode,
                on_event=on_event,
                on_warning=on_warning,
            )
    for line in boxes.unmatched(used):
        _warn(line)
    if not reports and shard is not None and not tally.inputs:  # as run: an empty shard is no error
        log.info("no input of %s falls in shard %s", " ".join(inputs), shard)
        ctx.exit(0)
    if not reports:
        raise Fatal(f"no input with boxes in {box_file} could be scored")
    rows = [_row(report, tolerance) for report in reports]
    if record_format == "jsonl":
        for row in rows:
            emit(json.dumps(row))
    else:
        emit_rows(rows, csv=record_format == "csv")
    ctx.exit(1 if tally.failed else 0)


def _row(report: LocalisationReport, tolerance: float) -> dict[str, Any]:
    found = report.localisation
    return {
        "method": report.method,
        "images": report.images,
        "maps": found.images,
        "pointing_game": round(found.pointing_game, 4),
        "energy_pointing_game": round(found.energy_pointing_game, 4),
        "box_area_share": round(found.box_area_share, 4),
        "tolerance_px": tolerance,
    }


def _warn(line: str) -> None:
    log.warning("warning: %s", escape_line(line))
