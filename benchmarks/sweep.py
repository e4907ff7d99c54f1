#!/usr/bin/env python
"""Sweep CPU threads x batch size per backend, and decode workers: see ``benchkit/sweep.py``.

Run alone on the machine: ``python benchmarks/sweep.py`` (results/sweep-cpu.json).
"""

from __future__ import annotations

import sys

from benchkit.sweep import main

if __name__ == "__main__":
    sys.exit(main())
