"""Whole processes, as a user runs them: ``scorecam run coffee.png`` per backend, cache cold
and warm, against each peer in a fresh process (import, model load, image, map)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchkit.agreement import agreement, to_input_size
from benchkit.cases import log

from scorecam_cli.devices import resolve_device

BENCH = Path(__file__).resolve().parents[1] / "bench.py"
PEER_BATCH_SIZE = {"cpu": 4, "cuda": 64}  # the peers' best in results/cpu-full.json; CUDA: guess


def scorecam_command() -> list[str]:
    exe = Path(sys.executable).parent / "scorecam"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scorecam_cli"]


def _timed_process(command: list[str], env: dict[str, str]) -> tuple[float, Any]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - start, proc


def _cli_run(
    args: argparse.Namespace, backend: str, out: Path, env: dict[str, str]
) -> tuple[float, list[dict[str, Any]], str]:
    """One ``scorecam run IMAGE`` process: seconds, its records, its stderr's tail."""
    command = [*scorecam_command(), "--quiet", "run", str(args.e2e_image), "-o", str(out),
               "--format", "jsonl", "--overwrite", "--backend", backend,
               "--device", args.device]  # fmt: skip
    if args.e2e_batch_size:
        command += ["--batch-size", str(args.e2e_batch_size)]
    if args.e2e_size:
        command += ["--input-size", str(args.e2e_size)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    seconds, proc = _timed_process(command, env)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not records:
        raise RuntimeError(f"`{' '.join(command)}` exited {proc.returncode}: {proc.stderr[-500:]}")
    return seconds, records, proc.stderr.strip()[-300:]


def ours_whole_process(args: argparse.Namespace, backend: str, rounds: int) -> dict[str, Any]:
    """Cold: a fresh, empty cache (the export included); warm: the same cache again."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**_env(), "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        cold, records, stderr = _cli_run(args, backend, Path(tmp) / "out", env)
        log(f"  scorecam run --backend {backend}: cold cache {cold:.2f} s")
        warm_runs = []
        for _ in range(rounds):
            seconds, records, stderr = _cli_run(args, backend, Path(tmp) / "out", env)
            warm_runs.append(seconds)
            log(f"  scorecam run --backend {backend}: warm cache {seconds:.2f} s")
        saved = np.load(records[0]["npy"])  # (H, W) raw map of the warm run
    return {
        "cold_seconds": cold,
        "warm_runs": warm_runs,
        "warm_seconds": statistics.median(warm_runs),
        "forward_passes": records[0]["forward_passes"],
        "class_index": records[0]["class_index"],
        "stderr": stderr,
        "map": saved,
    }


def peer_whole_process(args: argparse.Namespace, peer: str, rounds: int) -> dict[str, Any]:
    """``rounds`` fresh processes running the peer on the image; median wall seconds."""
    device = resolve_device(args.device)
    batch = args.e2e_peer_batch_size or PEER_BATCH_SIZE.get(device.type, 4)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "map.npy"
        command = [sys.executable, str(BENCH), "--peer-worker", peer, "--peer-worker-output",
                   str(output), "--peer-worker-batch-size", str(batch), "--e2e-image",
                   str(args.e2e_image), "--device", args.device,
                   "--e2e-size", str(args.e2e_size or 224)]  # fmt: skip
        for _ in range(rounds):
            seconds, proc = _timed_process(command, _env())
            if proc.returncode != 0:
                raise RuntimeError(f"{peer} worker exited {proc.returncode}: {proc.stderr[-500:]}")
            runs.append(seconds)
            log(f"  {peer} (fresh process, batch {batch}): {seconds:.2f} s")
        peer_map = np.load(output)
    return {"batch_size": batch, "runs": runs, "seconds": statistics.median(runs), "map": peer_map}


OURS_WARM_ROUNDS = 3  # ours takes seconds: the median of 3 warm processes is cheap and steadier


def _env() -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1"}


def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    """Whole-process seconds of ours per backend (cold and warm cache) and of each peer."""
    rounds = max(1, min(2, args.repeats))
    ours_rounds = max(OURS_WARM_ROUNDS, rounds)
    log(f"== end-to-end on {args.e2e_image.name}: {ours_rounds} warm round(s) of ours, "
        f"{rounds} of each peer")  # fmt: skip
    startup_code = (
        "import torch, scorecam_cli.cam\n"
        "from scorecam_cli.models import load_model; load_model('efficientnet_lite0')"
    )
    startup, _ = _timed_process([sys.executable, "-c", startup_code], _env())
    ours = {name: ours_whole_process(args, name, ours_rounds) for name in args.backends}
    peers = {name: peer_whole_process(args, name, rounds) for name in args.peers}
    reference = next(iter(ours.values()))["map"]
    for row in [*ours.values(), *peers.values()]:
        theirs = row.pop("map")
        size = reference.shape[:2]
        row["agreement"] = agreement(
            to_input_size(torch.from_numpy(reference), size),
            to_input_size(torch.as_tensor(theirs), size),
        )
    fastest_ours = min(ours, key=lambda name: ours[name]["warm_seconds"])
    fastest_peer = min((p["seconds"] for p in peers.values()), default=float("nan"))
    return {
        "image": args.e2e_image.name,
        "startup_seconds": startup,
        "ours": ours,
        "peers": peers,
        "fastest_ours": fastest_ours,
        "speedup_warm_vs_fastest_peer": fastest_peer / ours[fastest_ours]["warm_seconds"],
        "speedup_cold_vs_fastest_peer": fastest_peer
        / min(row["cold_seconds"] for row in ours.values()),
    }
