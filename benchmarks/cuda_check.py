#!/usr/bin/env python
"""One step of the CUDA check; ``benchmarks/cuda_check.sh`` runs them all, each in its own
process under its own time budget. Steps (modules in ``benchkit/``):

  preflight  the GPU's name and versions, the imports (cuda_report.py); exit 3 without a GPU
  compare    ours at fp32/fp16/bf16 against grad-cam and torchcam, per case (cuda_compare.py)
  sweep      masked images per pass, images per call, channels_last, OOM back-off (cuda_sweep.py)
  run        whole `scorecam run` processes on a folder, GPU utilisation (cuda_run.py)
  limit      plain forward passes per second, the limit and our efficiency (cuda_limit.py)
  report     merge the part files into OUT/cuda-<gpu>.json, print the summary (cuda_report.py)

Each step writes PARTS/<step>.json as it goes. ``--dry-run``: tiny models on the CPU, seconds,
nothing measured; it checks the plumbing before device time is spent.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# pytorch-grad-cam draws a tqdm bar for every image; keep the logs readable.
os.environ.setdefault("TQDM_DISABLE", "1")

STEPS = ("preflight", "compare", "sweep", "run", "limit", "report")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--parts", type=Path, required=True, help="folder of the part files")
    parser.add_argument("--out", type=Path, default=None, help="report: where the JSON goes")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds for this step")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU")
    args = parser.parse_args(argv)
    if args.step == "report" and args.out is None:
        parser.error("report needs --out")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchkit import cuda_compare, cuda_limit, cuda_report, cuda_run, cuda_sweep
    from benchkit.cuda_plan import Deadline, Part, make_plan
    from benchkit.timing import GUARD

    GUARD.update(max_others=1.0, retries=0)  # a machine of our own: record, never wait
    plan = make_plan(args.dry_run)
    deadline = Deadline(args.budget)
    part = Part(args.parts, args.step, args.dry_run)
    if args.step == "preflight":
        return cuda_report.preflight(plan, part, deadline)
    if args.step == "report":
        cuda_report.report(plan, args.out, args.parts)
        return 0
    steps = {"compare": cuda_compare, "sweep": cuda_sweep, "run": cuda_run, "limit": cuda_limit}
    steps[args.step].run(plan, part, deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
