"""The benchmark's main: plan the cases, time them, the whole-process part, the report."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchkit.case_run import run_case
from benchkit.cases import RESULTS, log, prepare_case
from benchkit.end_to_end import end_to_end
from benchkit.options import parse_args, plan
from benchkit.peers import peer_worker
from benchkit.report import cpu_info, device_name, print_e2e, print_table, versions
from benchkit.timing import GUARD

from scorecam_cli.devices import resolve_device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peer_worker:
        return peer_worker(args)
    GUARD.update(max_others=args.max_others, retries=args.retries)
    device = resolve_device(args.device)
    mode = "quick" if args.quick else "full"
    json_path = args.json or RESULTS / f"{device.type}-{mode}.json"
    cases = plan(args)
    log(
        f"scorecam-cli benchmark, {mode} mode on {device} ({device_name(device)}), "
        f"{torch.get_num_threads()} threads, backends {', '.join(args.backends)}, repeats "
        f"{args.repeats}, precision {args.precision}"
    )
    log("cases: " + "; ".join(f"{m}@{s} {p.name}" for m, p, s in cases))
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    results = []
    cache: dict[str, Any] = {}
    for model_name, image, size in cases:
        results.append(run_case(prepare_case(model_name, image, size, device, cache), args))
    cache.clear()
    e2e = None
    if (args.e2e or not args.quick) and not args.no_e2e:
        try:
            e2e = end_to_end(args)
        except Exception as exc:  # keep the timings already taken
            log(f"== end-to-end failed: {type(exc).__name__}: {exc}")
            e2e = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
    elapsed = time.perf_counter() - started
    print_table(results)
    if e2e is not None:
        print_e2e(e2e)
    print(f"total {elapsed:.0f} s")
    contended = _warn_contended(results, args.max_others)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else argv,
        "mode": mode,
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_info(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "contended_runs": contended,
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "platform": platform.platform(),
        "versions": versions(),
        "backends": args.backends,
        "precision_ours": args.precision,
        "repeats": args.repeats,
        "warmup": "one full run per tool" if args.warmup == "run" else "probe batches only",
        "total_seconds": elapsed,
        "cases": results,
        "end_to_end": e2e,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {json_path}")
    return 0


def _runs_at_best(entry: Any) -> list[dict[str, Any]]:
    if not isinstance(entry, dict):
        return []
    return list(entry.get("runs_at_best", [])) + [
        run for value in entry.values() for run in _runs_at_best(value)
    ]


def _warn_contended(results: list[dict[str, Any]], max_others: float) -> int:
    """Warn about timed runs that other processes disturbed; their count."""
    runs = [run for case in results for run in _runs_at_best(case)]
    contended = [r for r in runs if r["others"] > max_others]
    if contended:
        print(
            f"warning: {len(contended)} of the {len(runs)} runs at the best batch sizes ran "
            f"while other processes used over {max_others:.0%} of the CPUs (up to "
            f"{max(r['others'] for r in contended):.0%}): those timings are unreliable"
        )
    return len(contended)
