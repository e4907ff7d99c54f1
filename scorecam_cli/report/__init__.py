"""The static report of a run folder: ``build_report(OUT)`` writes ``OUT/report.html``.

Reads the manifest only (``scorecam_cli.manifest``), never the pipeline. ``build`` makes the page
(Jinja2 template ``report.html`` with ``report.js`` and ``report.css`` inline), ``thumbnails`` the
small WebP copies it shows.
"""
