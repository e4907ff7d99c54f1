"""Model factories for ``--model tinymodels:NAME`` (tests put this folder on PYTHONPATH)."""

from __future__ import annotations

from conftest import TinyNet


def tiny() -> TinyNet:
    """The seeded TinyNet of conftest: 12-channel target layer ``relu`` at 1/4 input size."""
    return TinyNet()
