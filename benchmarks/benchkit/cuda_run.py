"""Step 4 of the CUDA check: whole ``scorecam run`` processes on a folder of images, on CUDA.

Each run is a fresh process on the same folder (the sample photos copied up to ``run_images``,
``scaling.make_images``), timed with its records (``scaling.timed_run``: images/s end to end, and
steady, after the first batch). Meanwhile ``nvidia-smi dmon -s u`` samples the GPU's SM and
memory utilisation once a second; each run gets their means over the whole run and over its
steady part. Runs, as the budget allows: the defaults with ``--workers 1``, then more decode
workers, then the sweep's best batch size (fp32, then fp16).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchkit.cuda_plan import TESTS, Deadline, Part, Plan, log, read_part
from benchkit.end_to_end import scorecam_command
from scaling import make_images, timed_run

MIN_SECONDS_FOR_A_RUN = 25.0


class Dmon:
    """``nvidia-smi dmon -s u -d 1`` in the background: (time, {column: value}) samples."""

    def __init__(self, log_path: Path) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.columns: list[str] = []
        self.log_path = log_path
        command = ["nvidia-smi", "dmon", "-s", "u", "-d", "1"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.log_path.open("a") as raw:
            for line in self.process.stdout:
                raw.write(line)
                self._parse(time.perf_counter(), line.split())

    def _parse(self, now: float, fields: list[str]) -> None:
        if fields and fields[0] == "#":
            if "gpu" in fields:
                self.columns = fields[1:]
            return
        if len(fields) != len(self.columns):
            return
        values = {c: float(v) for c, v in zip(self.columns, fields, strict=True) if _is_number(v)}
        self.samples.append((now, values))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.thread.join(timeout=5)

    def utilisation(self, start: float, end: float) -> dict[str, Any]:
        """Mean and max of sm and mem (%) over samples taken in [start, end]."""
        window = [v for t, v in self.samples if start <= t <= end]
        out: dict[str, Any] = {"samples": len(window)}
        for column in ("sm", "mem"):
            values = [v[column] for v in window if column in v]
            if values:
                out[f"{column}_mean_pct"] = statistics.fmean(values)
                out[f"{column}_max_pct"] = max(values)
        return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def start_dmon(log_path: Path) -> Dmon | None:
    try:
        return Dmon(log_path)
    except OSError as exc:
        log(f"  nvidia-smi dmon unavailable ({exc}): no GPU utilisation")
        return None


def run_options(plan: Plan, parts: Path) -> list[tuple[str, list[str]]]:
    """(label, options) of each run, in order."""
    if plan.dry_run:
        common = ["--model", "tinymodels:tiny", "--input-size", "64", "--device", "cpu"]
    else:
        common = ["--device", "cuda"]
    runs = [(f"workers {w}", [*common, "--workers", str(w)]) for w in plan.run_workers]
    best = (read_part(parts, "sweep") or {}).get("best", {})
    most = str(max(plan.run_workers))
    model = plan.models[0][0] if not plan.dry_run else "tiny"
    for precision in ("fp32",) if plan.dry_run else ("fp32", "fp16"):  # CPU: the CLI has no fp16
        entry = best.get(f"{model}/{precision}")
        if entry:
            bs = str(entry["batch_size"])
            options = [*common, "--workers", most, "--batch-size", bs, "--precision", precision]
            runs.append((f"workers {most}, batch {bs}, {precision}", options))
    return runs


def run(plan: Plan, part: Part, deadline: Deadline) -> None:
    parts = part.path.parent
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if plan.dry_run:
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    rows: list[dict[str, Any]] = []
    part.save(runs=rows, skipped=[], images=plan.run_images)
    program = [*scorecam_command(), "--quiet", "run"]
    dmon = None if plan.dry_run else start_dmon(parts / "dmon.log")
    with tempfile.TemporaryDirectory(prefix="scorecam-cuda-run-") as tmp:
        images = make_images(Path(tmp) / "images", plan.run_images)
        for n, (label, options) in enumerate(run_options(plan, parts)):
            if deadline.left() < MIN_SECONDS_FOR_A_RUN:
                part.data["skipped"].append(label)
                continue
            log(f"  scorecam run {' '.join(options)}")
            start = time.perf_counter()
            try:
                row = timed_run(label, program, images, Path(tmp) / f"out-{n}", options, env)
            except SystemExit as exc:  # timed_run's failure: the run's exit code and count
                rows.append({"engine": label, "options": options, "failed": str(exc)})
                part.save()
                continue
            row["options"] = options
            if dmon is not None:
                first = row["record_times_s"][0]
                row["gpu_utilisation"] = dmon.utilisation(start, start + row["wall_s"])
                row["gpu_utilisation_after_first_record"] = dmon.utilisation(
                    start + first, start + row["wall_s"]
                )
            log(
                f"  {label}: {row['images_per_s']:.2f} images/s end to end, "
                f"{row['steady_images_per_s']:.2f} steady"
            )
            rows.append(row)
            part.save(seconds=deadline.elapsed())
    if dmon is not None:
        dmon.stop()
    part.save(python=sys.executable, complete=True, seconds=deadline.elapsed())
