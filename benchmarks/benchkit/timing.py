"""Timing: wall and CPU seconds of a run, a contention guard, tools swept over batch sizes."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from benchkit.cases import log


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


@dataclass
class Run:
    """One timed run: wall and this process's CPU seconds, the 1-minute load before it, and the
    share of all CPUs that other processes used meanwhile (from /proc/stat; -1 if unknown)."""

    seconds: float
    cpu_seconds: float
    load: float
    others: float
    attempts: int = 1


# Contention guard (set from the command line): a run during which other processes used more
# than MAX_OTHERS of the CPUs is retried, after waiting for quiet, up to RETRIES times.
GUARD = {"max_others": 0.1, "retries": 3, "max_wait": 900.0}


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (/proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float) -> None:
    """Sleep until others use at most MAX_OTHERS of the CPUs over 5 s, or ``max_wait`` passed."""
    deadline = time.monotonic() + max_wait
    cpus = os.cpu_count() or 1
    while time.monotonic() < deadline:
        before, mine = busy_cpu_seconds(), time.process_time()
        time.sleep(5)
        after = busy_cpu_seconds()
        if before is None or after is None:
            return
        others = (after - before - (time.process_time() - mine)) / (5 * cpus)
        if others <= GUARD["max_others"]:
            return
    log("    still busy; going on anyway")


@dataclass
class Tool:
    """A timed tool: ``run(batch_size)`` at ``batch_sizes``; runs are kept by batch size."""

    label: str
    run: Callable[[int], Any]
    batch_sizes: list[int]
    runs: dict[int, list[Run]] = field(default_factory=dict)
    output: Any = field(default=None, repr=False)  # the output of the first run at the best size
    outputs: dict[int, Any] = field(default_factory=dict, repr=False)

    def timed_run(self, batch_size: int, device: torch.device, note: str = "") -> None:
        cpus = os.cpu_count() or 1
        for attempt in range(1, int(GUARD["retries"]) + 2):
            load = os.getloadavg()[0]
            busy, cpu = busy_cpu_seconds(), time.process_time()
            seconds, out = timed(lambda: self.run(batch_size), device)
            cpu = time.process_time() - cpu
            busy_after = busy_cpu_seconds()
            others = -1.0
            if busy is not None and busy_after is not None:
                others = max(0.0, busy_after - busy - cpu) / (seconds * cpus)
            log(
                f"    {self.label}: batch {batch_size}: {seconds:.2f} s (cpu {cpu:.1f} s, load "
                f"{load:.2f}, others {100 * others:.0f}% of the CPUs){note}"
            )
            if others <= GUARD["max_others"] or attempt > GUARD["retries"]:
                break
            log("    contended: waiting for quiet, then timing it again")
            wait_for_quiet(GUARD["max_wait"])
        self.outputs.setdefault(batch_size, out)
        self.runs.setdefault(batch_size, []).append(Run(seconds, cpu, load, others, attempt))

    def sweep(self, device: torch.device, warmup_run: bool) -> None:
        """Optionally one untimed warm-up run, then one timed run per batch size."""
        if warmup_run:
            log(f"    {self.label}: warm-up run (batch {self.batch_sizes[0]})")
            self.run(self.batch_sizes[0])
        for bs in self.batch_sizes:
            self.timed_run(bs, device)
        self.output = self.outputs[self.batch_size]
        self.outputs = {}

    @property
    def batch_size(self) -> int:
        """The batch size of the fastest first run."""
        return min(self.runs, key=lambda bs: self.runs[bs][0].seconds)

    @property
    def seconds(self) -> float:
        """Median wall seconds of the runs at the best batch size."""
        return statistics.median(r.seconds for r in self.runs[self.batch_size])

    def as_json(self) -> dict[str, Any]:
        best = self.runs[self.batch_size]
        return {
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "cpu_seconds": statistics.median(r.cpu_seconds for r in best),
            "seconds_by_batch_size": {str(k): v[0].seconds for k, v in self.runs.items()},
            "runs_at_best": [r.__dict__ for r in best],
        }


def measure_all(tools: list[Tool], repeats: int, warmup_run: bool, device: torch.device) -> None:
    """Sweep every tool's batch sizes, then ``repeats - 1`` more runs of each at its best size.

    The repeats go round-robin over the tools, so that load from elsewhere on a shared machine
    hits every tool alike rather than whichever ran while it lasted.
    """
    for tool in tools:
        tool.sweep(device, warmup_run)
    for round_ in range(repeats - 1):
        for tool in tools:
            tool.timed_run(tool.batch_size, device, f" (repeat {round_ + 1})")
