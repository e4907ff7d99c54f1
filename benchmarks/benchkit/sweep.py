"""Sweep CPU threads x batch size per backend, and decode workers, for the defaults.

1. plain forward passes of the embedded model (ms per image) per backend, thread count and
   batch size, in this process;
2. exact Score-CAM of coffee.png (``compute_cams``, masks included) per backend, thread count and
   batch size: the best of these is the backend's default batch size and thread count;
3. whole ``scorecam run sample_images/`` processes (backend auto, export cache warm) per compute
   thread count and ``--workers`` (DataLoader decode processes): decode against compute.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchkit.cases import IMAGES, RESULTS, log, prepare_case
from benchkit.end_to_end import scorecam_command
from benchkit.limit import best_plain_batch_size
from benchkit.options import int_list
from benchkit.ours import available_backends, case_backends, forward_of, run_ours
from benchkit.report import cpu_info, versions
from benchkit.timing import timed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=None, help="comma list (default: all installed)")
    parser.add_argument("--threads", type=int_list, default=sorted({1, cores}))
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 2, 4, 8, 16])
    parser.add_argument("--workers", type=int_list, default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=224, help="input size of parts 1 and 2")
    parser.add_argument("--images", type=int, default=32, help="images per plain-pass timing")
    parser.add_argument("--parts", type=int_list, default=[1, 2, 3])
    parser.add_argument("--json", type=Path, default=RESULTS / "sweep-cpu.json")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    args.backends = args.backends.split(",") if args.backends else available_backends(device)
    return args


def sweep_in_process(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Parts 1 and 2: one row per backend, thread count and batch size."""
    rows = []
    case = prepare_case(
        "efficientnet_lite0", IMAGES / "coffee.png", args.size, torch.device("cpu"), {}
    )
    for threads in args.threads:
        backends, _ = case_backends(case, args.backends, threads)  # sets torch's threads too
        for name, backend in backends.items():
            plain: dict[int, float] = {}  # s per image by batch size
            if 1 in args.parts:
                forward = forward_of(case, backend)
                _, plain = best_plain_batch_size(
                    case, args.batch_sizes, "fp32", forward, name, images=args.images
                )
            for bs in args.batch_sizes:
                row: dict[str, Any] = {"backend": name, "threads": threads, "batch_size": bs}
                if 1 in args.parts:
                    row["plain_ms_per_image"] = 1000 * plain[bs]
                if 2 in args.parts:
                    seconds, result = timed(
                        lambda bs=bs, backend=backend: run_ours(case, bs, "fp32", backend),
                        case.images.device,
                    )
                    row["scorecam_seconds"] = seconds
                    row["forward_passes"] = result.forward_passes
                log(f"  {row}")
                rows.append(row)
    return rows


def sweep_workers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Part 3: whole ``scorecam run sample_images/`` processes per decode-worker count."""
    rows = []
    env = {**os.environ, "TQDM_DISABLE": "1"}
    for threads in args.threads:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as tmp:
                command = [*scorecam_command(), "--quiet", "run", str(IMAGES), "-o", tmp,
                           "--workers", str(workers), "--threads", str(threads),
                           "--input-size", str(args.size), "--overwrite"]  # fmt: skip
                subprocess.run(command, env=env, capture_output=True, check=True)
                start = time.perf_counter()  # the second run: the export cache is warm
                subprocess.run(command, env=env, capture_output=True, check=True)
                row = {"threads": threads, "workers": workers}
                row["seconds"] = time.perf_counter() - start
            log(f"  {row}")
            rows.append(row)
    return rows


def best_settings(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per backend: the thread count and batch size of the fastest Score-CAM run."""
    best: dict[str, Any] = {}
    for row in rows:
        if "scorecam_seconds" not in row:
            continue
        current = best.get(row["backend"])
        if current is None or row["scorecam_seconds"] < current["scorecam_seconds"]:
            best[row["backend"]] = row
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log(f"sweep on {cpu_info()['model']}: backends {args.backends}, threads {args.threads}, "
        f"batch sizes {args.batch_sizes}, workers {args.workers}")  # fmt: skip
    rows = sweep_in_process(args) if {1, 2} & set(args.parts) else []
    workers = sweep_workers(args) if 3 in args.parts else []
    best = best_settings(rows)
    print(f"{'backend':<12} {'threads':>7} {'batch':>5} {'plain ms/img':>12} {'scorecam s':>10}")
    for row in rows:
        plain = row.get("plain_ms_per_image", float("nan"))
        cam = row.get("scorecam_seconds", float("nan"))
        print(f"{row['backend']:<12} {row['threads']:>7} {row['batch_size']:>5} {plain:>12.2f} "
              f"{cam:>10.3f}")  # fmt: skip
    for name, row in best.items():
        print(f"best {name}: {row['threads']} threads, batch {row['batch_size']}")
    for row in workers:
        print(
            f"scorecam run sample_images/ --threads {row['threads']} --workers "
            f"{row['workers']}: {row['seconds']:.2f} s"
        )
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "cpu": cpu_info(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "rows": rows,
        "best": best,
        "workers": workers,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.json}")
    return 0
