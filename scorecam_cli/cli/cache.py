"""``scorecam cache``: list the export cache, or clear it."""

from __future__ import annotations

import logging
import time

import click

from scorecam_cli.cli.output import emit
from scorecam_cli.cli.run import escape_field

log = logging.getLogger("scorecam_cli")


@click.command()
@click.option("--clear", is_flag=True, help="Remove every entry.")
def cache(clear: bool) -> None:
    """List the export cache (or --clear it), least recently used first.

    The ONNX exports of --backend onnxruntime and openvino, with OpenVINO's compiled blobs, in
    $XDG_CACHE_HOME/scorecam: one line per entry on stdout, SIZE<TAB>LAST USED<TAB>NAME (MB,
    local time, the name relative to that folder). Each run keeps the cache within
    SCORECAM_CACHE_MAX_GB (default 2), removing the least recently used entries first."""
    from scorecam_cli.backends.cache import (
        MAX_GB_VARIABLE,
        cache_dir,
        cache_entries,
        cache_limit,
        clear_cache,
        remove_stale_temporaries,
    )

    folder = escape_field(str(cache_dir()))
    if clear:
        removed = clear_cache()
        megabytes = sum(entry.size for entry in removed) / 2**20
        log.info("removed %d entries (%.2f MB) from %s", len(removed), megabytes, folder)
        return
    remove_stale_temporaries()
    entries = cache_entries()
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        emit(f"{entry.size / 2**20:.2f}\t{when}\t{escape_field(entry.name)}")
    total = sum(entry.size for entry in entries) / 2**20
    limit = cache_limit() / 2**30
    log.info(
        "%d entries, %.2f MB of %.3g GB (%s) in %s", len(entries), total, limit, MAX_GB_VARIABLE,
        folder,
    )  # fmt: skip
