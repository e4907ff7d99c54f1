"""What the commands write: records on stdout (one per line, flushed), the progress bar, and
one-line errors on stderr. Click only; heavy imports happen inside functions."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from scorecam_cli.events import Failure

log = logging.getLogger("scorecam_cli")


class StdoutClosed(Exception):
    """The reader of stdout went away (``| head -1``): the run ends quietly with exit 141.

    Not an OSError, so that Click does not turn it into exit 1."""


def emit(line: str, end: str = "\n") -> None:
    """Write one record to stdout and flush it, so a pipe sees each record at once.

    ``line`` may hold surrogate escapes (file names that are not UTF-8): they go out as the
    original bytes, as ``find -print0`` would print them.
    """
    data = (line + end).encode("utf-8", "surrogateescape")
    try:
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:
            sys.stdout.write(data.decode("utf-8", "replace"))
        else:
            sys.stdout.flush()
            stream.write(data)
            stream.flush()
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed() from None


def report_failure(failure: Failure) -> None:
    """One line on stderr naming the file and the reason."""
    reason = failure.reason
    text = reason if reason.startswith(failure.input) else f"{failure.input}: {reason}"
    click.echo(f"scorecam: error: {text}", err=True)


@contextmanager
def progress() -> Iterator[Any]:
    """A tqdm bar of images on stderr; off with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    quiet = log.getEffectiveLevel() > logging.INFO
    bar = tqdm(unit="img", file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        yield bar
    finally:
        bar.close()
