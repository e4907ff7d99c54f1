"""``python -m scorecam_cli`` runs the ``scorecam`` command."""

from scorecam_cli.cli import entry_point

entry_point()
