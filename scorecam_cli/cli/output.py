"""What the commands write: records on stdout (one per line, flushed), the progress bar, and
one-line errors on stderr. Click only; heavy imports happen inside functions."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

from scorecam_cli.cli.escaping import escape_line
from scorecam_cli.events import Event, Failure, RunTally

log = logging.getLogger("scorecam_cli")
_records: IO[bytes] | None = None  # stdout's own file once protect_stdout() moved fd 1 aside


def protect_stdout() -> None:
    """Keep stdout for records: from now on whatever else reaches file descriptor 1 (a user's
    model or factory printing, a native library, a child process) goes to stderr, and records
    go to a private copy of stdout. Nothing to do when stdout is no real file (Click's test
    runner) or is closed."""
    global _records
    try:
        if _records is not None or sys.stdout.fileno() != 1:
            return
        sys.stdout.flush()
        _records = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return


def silence_records() -> None:
    """Point stdout (and its private copy) at /dev/null: its reader went away."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (_records, sys.stdout):
        try:
            if stream is not None:
                os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass


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
        stream = _records or getattr(sys.stdout, "buffer", None)
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
    """One line on stderr naming the file and the reason, control characters escaped (a name
    with a newline or a terminal escape stays on its line and never reaches the terminal raw)."""
    reason = failure.reason
    text = reason if reason.startswith(failure.input) else f"{failure.input}: {reason}"
    click.echo(f"scorecam: error: {escape_line(text)}", err=True)


def event_reporter(bar: Any, tally: RunTally) -> Callable[[Event], None]:
    """``on_event`` for a command's events: counted in ``tally``, a tick of the progress ``bar``
    each, and a failure's one line on stderr."""

    def on_event(event: Event) -> None:
        bar.update(1)
        tally.add(event)
        if isinstance(event, Failure):
            bar.clear()
            report_failure(event)

    return on_event


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


def emit_rows(rows: list[dict[str, Any]], csv: bool) -> None:
    """Rows of equal keys as a CSV (header first) or an aligned table, one line per record."""
    keys = list(rows[0])
    if csv:
        emit(",".join(keys))
        for row in rows:
            emit(",".join(str(row[k]) for k in keys))
        return
    cells = [keys, *[[str(row[k]) for k in keys] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(keys))]
    for line in cells:
        emit(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
