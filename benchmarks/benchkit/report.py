"""The report: the machine (CPU model and flags, versions), the table on stdout, the JSON."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_info() -> dict[str, Any]:
    """The CPU model and the flags that decide which kernels backends pick (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "flags": sorted(f for f in CPU_FLAGS if f in flags)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return str(cpu_info()["model"])


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    dists = ("torch", "torchvision", "scorecam-cli", "grad-cam", "torchcam", "numpy",
             "onnxruntime", "onnxruntime-gpu", "openvino", "onnx", "onnxscript")  # fmt: skip
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def print_table(cases: list[dict[str, Any]]) -> None:
    """One row per case and backend of ours, with the peers, the limit and the speed-up."""
    header = (
        f"{'case':<30} {'backend':<12} {'ours s (bs)':>13} {'grad-cam (bs)':>14} "
        f"{'torchcam (bs)':>14} {'limit (bs, backend)':>26} {'speed-up':>8} {'effic.':>6} "
        f"{'passes/K (K_nc)':>16} {'corr vs torch':>13}"
    )
    print(header)
    print("-" * len(header))
    for c in cases:
        name = f"{c['model']}@{c['input_size']} {c['image']}"

        def timing(entry: dict[str, Any] | None) -> str:
            return "-" if entry is None else f"{entry['seconds']:.3f} ({entry['batch_size']})"

        limit = c["limit_passes"]
        limit_text = f"{limit['seconds']:.3f} ({limit['batch_size']}, {limit['backend']})"
        fastest_peer = min(
            (c[p]["seconds"] for p in ("grad-cam", "torchcam") if p in c), default=float("nan")
        )
        for backend, ours in c["ours"].items():
            passes = f"{ours['forward_passes']}/{c['channels']} ({c['nonconstant_channels']})"
            print(
                f"{name:<30} {backend:<12} {timing(ours):>13} {timing(c.get('grad-cam')):>14} "
                f"{timing(c.get('torchcam')):>14} {limit_text:>26} "
                f"{fastest_peer / ours['seconds']:>7.2f}x "
                f"{limit['seconds'] / ours['seconds']:>6.2f} {passes:>16} "
                f"{ours['agreement_with_torch']['pearson']:>13.6f}"
            )
    print(
        "seconds per image (1 image per case; bs = best batch size); limit: the passes ours ran "
        "as plain forward passes in the fastest backend at its best batch size; speed-up = "
        "fastest peer / ours; effic. = limit / ours; passes: masked passes ours ran (incl. the "
        "shared zero mask) / K (non-constant); corr: map vs the torch backend's, min-max."
    )


def print_e2e(e2e: dict[str, Any]) -> None:
    if "skipped" in e2e:
        print(f"end-to-end: {e2e['skipped']}")
        return
    print(f"end-to-end, whole process on {e2e['image']} (startup {e2e['startup_seconds']:.2f} s):")
    for name, row in e2e["ours"].items():
        print(
            f"  scorecam run --backend {name:<12} cold cache {row['cold_seconds']:7.2f} s, warm "
            f"{row['warm_seconds']:7.2f} s ({row['forward_passes']} passes)"
        )
    for name, row in e2e["peers"].items():
        print(f"  {name:<35} {row['seconds']:7.2f} s (batch {row['batch_size']})")
    print(
        f"  speed-up over the fastest peer: warm {e2e['speedup_warm_vs_fastest_peer']:.2f}x, "
        f"cold {e2e['speedup_cold_vs_fastest_peer']:.2f}x ({e2e['fastest_ours']})"
    )
