"""``scorecam report``: the static HTML page of a run folder, built from its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from scorecam_cli.cli.common import user_errors
from scorecam_cli.cli.escaping import escape_field
from scorecam_cli.cli.output import emit

if TYPE_CHECKING:
    from scorecam_cli.file_limits import Limits

log = logging.getLogger("scorecam_cli")


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The HTML file to write.  [default: FOLDER/report.html]",
)
@click.option(
    "--thumb-size",
    type=click.IntRange(32, 1024),
    default=192,
    show_default=True,
    help="Longer side of the thumbnails, in pixels.",
)
@click.option(
    "--max-file-mb",
    type=click.FloatRange(0, min_open=True),
    default=256,
    show_default=True,
    help="Show no preview of overlays or inputs larger than this (MB), as run refuses them.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=50_000_000,
    show_default=True,
    help="Show no preview of images whose header announces more pixels, as run refuses them.",
)
@click.option(
    "--boxes",
    "box_file",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Draw these boxes on the cards' originals: a CSV image,class,x0,y0,x1,y1 or a folder "
    "of Pascal VOC .xml files, as for eval --boxes (classes by index or by the maps' names).",
)
def report(
    folder: Path,
    output: Path | None,
    thumb_size: int,
    max_file_mb: float,
    max_pixels: int,
    box_file: Path | None,
) -> None:
    """Write a static HTML page to browse the maps of a run folder.

    The page (FOLDER/report.html and its folder of WebP thumbnails, report-files/) opens from
    disk with no server and no network: one card per input with its original and its overlays,
    methods side by side, a class filter, a method filter and sorting. Links are relative, so
    the folder can be moved or zipped. Prints the page's path (escaped as run's records are).

    The folder is untrusted input: manifest lines that cannot be read, or whose paths lead out
    of FOLDER, are skipped with a warning; nothing is written through a symlinked folder.
    """
    from scorecam_cli.file_limits import Limits

    limits = Limits(max_file_bytes=int(max_file_mb * 2**20), max_pixels=max_pixels)
    emit(escape_field(str(write_report(folder, output, thumb_size, limits, box_file))))


def write_report(
    folder: Path,
    output: Path | None = None,
    thumb_size: int = 192,
    limits: Limits | None = None,
    box_file: Path | None = None,
) -> Path:
    """Build the report, say on stderr what is missing from it, and return the page's path;
    overlays and inputs are read under ``limits`` (default: run's defaults)."""
    from scorecam_cli.file_limits import DEFAULT_LIMITS
    from scorecam_cli.report.build import build_report

    with user_errors():
        result = build_report(folder, output, thumb_size, limits or DEFAULT_LIMITS, box_file)
    for problem in result.problems:
        log.warning("warning: %s", problem)
    if result.missing_inputs:
        log.warning(
            "%d inputs not found (first: %s); their cards show the overlays only",
            len(result.missing_inputs),
            result.missing_inputs[0],
        )
    log.info(
        "report of %d maps of %d inputs: %d thumbnails written, %d reused",
        result.maps,
        result.cards,
        result.thumbnails_written,
        result.thumbnails_reused,
    )
    return result.html
