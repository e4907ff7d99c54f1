"""The benchmark's command line, and the cases it plans."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from benchkit.cases import ALL_MODELS, IMAGES, QUICK_MODELS, QUICK_SIZES
from benchkit.ours import available_backends
from benchkit.peers import PEERS

from scorecam_cli.choices import PRECISIONS
from scorecam_cli.devices import resolve_device

DESCRIPTION = "Benchmark scorecam-cli's exact Score-CAM, per backend, against its peers."
EPILOG = f"""\
Each case probes every backend's plain forward throughput at a few batch sizes; the fastest
backend at its best batch size gives the limit (the passes ours ran, as plain passes).
Full mode: {", ".join(ALL_MODELS)} (resnets random-init, layer4) on coffee.png at --size (224);
ours per backend at its default, default/2 and best plain batch size; peers at 4 and 16 (CPU) or
16/32/64 (CUDA) and the best; one warm-up run per tool, then the median of --repeats (3); then
the whole-process part: `scorecam run coffee.png` per backend, cache cold and warm, against each
peer in a fresh process.
Quick mode (--quick, make bench): {", ".join(QUICK_MODELS)} at {QUICK_SIZES} (--size overrides),
every tool at its best plain batch size only, 1 repeat, no whole-process part (--e2e forces it).
"""


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="short run (minutes on 2 CPU cores)")
    add("--models", default=None, help=f"comma list from {', '.join(ALL_MODELS)}, or none for "
        "only the whole-process part (default: all; quick: the quick ones)")  # fmt: skip
    add("--images", default=None, help="comma list of files in sample_images/ (coffee.png)")
    add("--size", type=int, default=None, help="input size H = W (default 224; quick: per model)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--backends", default=None, help="comma list of backends for ours (default: torch and "
        "every exported backend installed for the device)")  # fmt: skip
    add("--precision", default="fp32", choices=PRECISIONS, help="ours and the limit only")
    add("--repeats", type=int, default=None, help="timed runs (quick: 1, full: 3)")
    add("--peers", default=",".join(PEERS), help="peers to time (comma list; '' for none)")
    add("--ours-batch-sizes", type=int_list, default=None, help="batch sizes for ours")
    add("--peer-batch-sizes", type=int_list, default=None, help="batch sizes for the peers")
    add("--probe-batch-sizes", type=int_list, default=None, help="plain forward batch sizes")
    add("--warmup", choices=["run", "batch"], default=None, help="run: one untimed run per "
        "tool (full default); batch: the probe's warm batches only (quick default)")  # fmt: skip
    add("--threads", type=int, default=None, help="CPU threads of torch and the backends")
    add("--e2e", action="store_true", help="whole-process part also in quick mode")
    add("--no-e2e", action="store_true", help="skip the whole-process part")
    add("--e2e-image", type=Path, default=IMAGES / "coffee.png", help="its image")
    add("--e2e-size", type=int, default=None, help="input size of the whole-process part "
        "(default: the model's own, 224; smaller only to check that it runs)")  # fmt: skip
    add("--e2e-batch-size", type=int, default=None, help="ours: --batch-size of scorecam run "
        "(default: each backend's own default)")  # fmt: skip
    add("--e2e-peer-batch-size", type=int, default=None, help="the peers' (CPU 4, CUDA 64)")
    add("--explain-agreement", action="store_true", help="recompute each peer's map with its "
        "mask convention (K more passes each)")  # fmt: skip
    add("--max-others", type=float, default=0.1, help="retry a run during which other "
        "processes used more than this share of the CPUs (1 turns the guard off)")  # fmt: skip
    add("--retries", type=int, default=3, help="retries of a contended run (default 3)")
    add("--profile", action="store_true", help="torch profile of ours per case (stderr)")
    add("--json", type=Path, default=None, help="default benchmarks/results/<device>-<mode>.json")
    add("--peer-worker", default=None, help=argparse.SUPPRESS)
    add("--peer-worker-output", type=Path, default=None, help=argparse.SUPPRESS)
    add("--peer-worker-batch-size", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.warmup = args.warmup or ("batch" if args.quick else "run")
    if args.models == "none":
        models: list[str] = []
        args.e2e = True
    elif args.models:
        models = args.models.split(",")
    else:
        models = list(QUICK_MODELS if args.quick else ALL_MODELS)
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(ALL_MODELS)}")
    args.models = models
    args.peers = [p for p in args.peers.split(",") if p]
    if any(p not in PEERS for p in args.peers):
        parser.error(f"peers are {', '.join(PEERS)}")
    device = torch.device("cpu") if args.peer_worker else resolve_device(args.device)
    args.backends = args.backends.split(",") if args.backends else available_backends(device)
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, Path, int]]:
    """(model, image, input size) of every case."""
    names = args.images.split(",") if args.images else ["coffee.png"]
    cases = []
    for model in args.models:
        size = args.size or (QUICK_SIZES.get(model, 224) if args.quick else 224)
        cases += [(model, IMAGES / name, size) for name in names]
    return cases
