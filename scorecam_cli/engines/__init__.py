"""Engines: what runs the pipeline over the inputs.

- ``local`` (the default): :func:`scorecam_cli.pipeline.run` in this process, no Ray anywhere.
- ``ray``: :mod:`scorecam_cli.engines.ray` (extra ``scorecam-cli[ray]``) runs the same pipeline
  pieces on a Ray cluster: decoding as tasks, the model in a pool of actors.

Importing this package imports neither torch nor Ray.
"""
