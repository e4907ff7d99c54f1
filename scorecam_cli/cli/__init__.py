"""The ``scorecam`` command: Click options, help text, record formatting and exit codes only.

stdout carries data (one record per line); progress, logs and errors go to stderr. Heavy imports
(torch, OpenCV) happen inside commands so ``scorecam --help`` is instant. One module per command;
``common`` holds what they share.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import warnings
from typing import TextIO

import click

from scorecam_cli import __version__
from scorecam_cli.cli.cache import cache
from scorecam_cli.cli.catalog import layers, models
from scorecam_cli.cli.escaping import escape_line
from scorecam_cli.cli.evaluate import eval_command
from scorecam_cli.cli.output import StdoutClosed, log, silence_records
from scorecam_cli.cli.report import report
from scorecam_cli.cli.run import run

__all__ = ["entry_point", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scorecam")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr: no progress, no logs.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr.")
def main(quiet: bool, verbose: bool) -> None:
    """Score-CAM heatmaps for image classifiers.

    \b
    scorecam run sample_images/ -o heatmaps/     explain every image of a folder
    find . -name '*.jpg' | scorecam run - -o out explain a list of paths from stdin
    scorecam report heatmaps/                    a page to browse them: heatmaps/report.html
    scorecam layers resnet50                     the layers you can explain
    scorecam cache                               the export cache (--clear empties it)
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scorecam: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


for _command in (run, eval_command, report, models, layers, cache):
    main.add_command(_command)


def entry_point() -> None:
    """The console script. Exit codes as shells expect: 141 when stdout is closed (``| head -1``),
    quietly; 130 on Ctrl-C, without a traceback or Click's "Aborted!". An error nobody foresaw
    (a user's model raising where no input is to blame, say) is one line and exit 1; ``-v``
    adds its traceback."""
    warnings.showwarning = _one_line_warning
    try:
        code = main.main(standalone_mode=False)
    except StdoutClosed:
        silence_records()
        sys.exit(141)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.stderr.write("\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        from scorecam_cli.errors import first_line

        log.debug("traceback:", exc_info=True)
        reason = escape_line(f"{type(exc).__name__}: {first_line(exc)}")
        click.echo(f"scorecam: error: {reason}", err=True)
        sys.exit(1)
    _exit_now(code if isinstance(code, int) else 0)


def _exit_now(code: int) -> None:
    """Exit with ``code`` once the command is done, skipping the interpreter's teardown.

    Every output is written and closed by now; the atexit handlers still run (logging, Ray,
    multiprocessing's children) and stdio is flushed. What is skipped is freeing torch and its
    native libraries module by module: 0.4-0.5 s of every run on the 2-core CPU, a tenth of
    ``scorecam run photo.jpg``. While a non-daemon thread still runs, it exits the normal way.
    """
    if any(not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except OSError:  # the reader went away after the last record
        code = code or 141
    sys.stderr.flush()
    os._exit(code)


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Library warnings (torch, torchvision) as one line on stderr, without source lines."""
    text = str(message).strip().splitlines()
    log.warning("warning: %s: %s", category.__name__, text[0] if text else "")
