"""``python -m scorecam_cli`` runs the ``scorecam`` command."""

from scorecam_cli.cli import main

main()
