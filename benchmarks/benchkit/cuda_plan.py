"""The CUDA check's plan and plumbing (``benchmarks/cuda_check.py``): what each step measures,
its deadline, its part file, the cases, the GPU's description.

Each step runs in its own process under its own time budget and rewrites its part file
(``PARTS/<step>.json``) after every unit of work, so a step stopped at its budget keeps what it
measured; ``cuda_report.py`` merges the parts. ``--dry-run`` swaps in tiny models, sizes and
batches on the CPU: it checks the plumbing in seconds and measures nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from benchkit.cases import IMAGES, ROOT, Case, prepare_case
from benchkit.report import versions

from scorecam_cli.choices import PRECISIONS

TESTS = ROOT / "tests"
COFFEE = IMAGES / "coffee.png"


@dataclass(frozen=True)
class Plan:
    """What the steps measure. ``models``: (name, input size) per case."""

    dry_run: bool
    device: torch.device
    models: tuple[tuple[str, int], ...]
    precisions: tuple[str, ...]
    ours_batch_sizes: tuple[int, ...]  # step 2, ours
    peer_batch_sizes: tuple[int, ...]  # step 2, each peer (its best is kept)
    repeats: int  # step 2: timed runs at each tool's best batch size
    sweep_batch_sizes: tuple[int, ...]  # step 3: masked images per pass
    sweep_image_batches: tuple[int, ...]  # step 3: images per compute_cams call
    probe_batch_sizes: tuple[int, ...]  # step 5: plain forward passes
    run_images: int  # step 4: images in the folder
    run_workers: tuple[int, ...]  # step 4: --workers of the runs


def make_plan(dry_run: bool) -> Plan:
    if dry_run:
        return Plan(
            dry_run=True,
            device=torch.device("cpu"),
            models=(("tiny", 64), ("tiny_vit", 32)),
            precisions=PRECISIONS,
            ours_batch_sizes=(2, 4),
            peer_batch_sizes=(2, 4),
            repeats=2,
            sweep_batch_sizes=(2, 4),
            sweep_image_batches=(1, 2),
            probe_batch_sizes=(2, 4),
            run_images=6,
            run_workers=(0, 1),
        )
    return Plan(
        dry_run=False,
        device=torch.device("cuda"),
        models=(("efficientnet_lite0", 224), ("resnet50", 224), ("vit_b_16", 224)),
        precisions=PRECISIONS,
        ours_batch_sizes=(128, 256, 512),
        peer_batch_sizes=(32, 64, 128, 256),
        repeats=3,
        sweep_batch_sizes=(64, 128, 256, 512, 1024),
        sweep_image_batches=(1, 8, 32),
        probe_batch_sizes=(64, 128, 256, 512, 1024),
        run_images=64,
        run_workers=(1, 4),
    )


class Deadline:
    """A step's time budget, in seconds from now."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


class Part:
    """A step's part file ``PARTS/<name>.json``, rewritten atomically on every ``save``."""

    def __init__(self, parts: Path, name: str, dry_run: bool) -> None:
        self.path = parts / f"{name}.json"
        self.data: dict[str, Any] = {"step": name, "dry_run": dry_run, "complete": False}

    def save(self, **fields: Any) -> None:
        self.data.update(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(to_json(self.data))
        os.replace(tmp, self.path)


class SkipCase(Exception):
    """A case that is not measured, for the reason given (recorded in the part's ``skipped``)."""


def run_cases(
    plan: Plan,
    part: Part,
    deadline: Deadline,
    min_seconds: float,
    measure: Callable[[str, int], dict[str, Any]],
) -> None:
    """``measure(name, size)`` for each of the plan's models while ``min_seconds`` of the budget
    are left: each result appended to the part's ``cases``; a spent budget, a SkipCase or a
    failure recorded in its ``skipped`` (the next case still runs); the part saved after each
    case, and marked complete at the end."""
    for name, size in plan.models:
        if deadline.left() < min_seconds:
            part.data["skipped"].append(f"{name}@{size}: budget spent")
            log(f"  {name}@{size}: skipped, {deadline.left():.0f} s of the budget left")
            continue
        try:
            part.data["cases"].append(measure(name, size))
        except SkipCase as skip:
            part.data["skipped"].append(f"{name}@{size}: {skip}")
        except Exception as exc:  # recorded; the next case still runs
            part.data["skipped"].append(f"{name}@{size}: failed: {type(exc).__name__}: {exc}")
            log(f"  {name}@{size} failed: {type(exc).__name__}: {exc}")
        part.save(seconds=deadline.elapsed())
        if plan.device.type == "cuda":
            torch.cuda.empty_cache()
    part.save(complete=True, seconds=deadline.elapsed())


def to_json(data: Any) -> str:
    """Indented JSON, with NaN and infinities as null (strict JSON) and odd objects as text."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(data), indent=2, default=str, allow_nan=False) + "\n"


def read_part(parts: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((parts / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_case(
    name: str,
    size: int,
    device: torch.device,
    image: Path = COFFEE,
    cache: dict[str, Any] | None = None,
) -> Case:
    """The benchmark case of ``name`` at ``size`` on ``image`` (dry-run models included);
    ``cache`` keeps the model for the next image."""
    cache = {} if cache is None else cache
    if name in ("tiny", "tiny_vit") and name not in cache:
        cache.clear()
        cache[name] = _dry_model(name, size, device)
    return prepare_case(name, image, size, device, cache)


def _dry_model(name: str, size: int, device: torch.device) -> tuple[Any, str, str, Any]:
    """Tiny stand-ins: the tests' TinyNet (layer ``relu``) and a 2-block ViT, tapped."""
    from benchkit.vit_case import init_zero_weights, tap_default_layer
    from torchvision.models import VisionTransformer

    from scorecam_cli.devices import prepare_model

    prep = SimpleNamespace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    if name == "tiny":
        if str(TESTS) not in sys.path:
            sys.path.insert(0, str(TESTS))
        from tinymodels import tiny

        return prepare_model(tiny(), device), "relu", "relu", prep
    torch.manual_seed(0)
    vit = VisionTransformer(size, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    init_zero_weights(vit.eval())
    layer, label = tap_default_layer(vit, (size, size))
    return prepare_model(vit, device), layer, label, prep


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """Plain float32 in cuDNN convolutions and matrix products meanwhile (torch's default lets
    cuDNN use TF32, a 10-bit mantissa)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def gpu_info(device: torch.device) -> dict[str, Any]:
    """The device's name, memory and capability, the driver, CUDA, cuDNN, torch's float32 flags
    and the packages' versions."""
    info: dict[str, Any] = {"device": str(device), "versions": versions()}
    info["versions"]["scorecam_cli_commit"] = _commit()
    info["torch_flags"] = {
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    info["cpu_count"] = os.cpu_count()
    info["platform"] = platform.platform()
    if device.type != "cuda":
        info["name"] = f"CPU ({platform.processor() or platform.machine()}, dry run)"
        return info
    props = torch.cuda.get_device_properties(device)
    info.update(
        name=props.name,
        memory_gib=round(props.total_memory / 2**30, 1),
        capability=f"{props.major}.{props.minor}",
        multiprocessors=props.multi_processor_count,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        driver=_nvidia_smi("driver_version"),
    )
    return info


def gpu_slug(name: str) -> str:
    """``NVIDIA H200`` -> ``h200``: the <gpu> of ``cuda-<gpu>.json``."""
    words = name.lower().replace("nvidia", " ").split()
    slug = "-".join("".join(c for c in w if c.isalnum()) for w in words)
    return slug.strip("-") or "gpu"


def _nvidia_smi(field: str) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def _commit() -> str:
    """$SCORECAM_COMMIT, else the checkout's HEAD (the device machine's copy may lack .git)."""
    if os.environ.get("SCORECAM_COMMIT"):
        return os.environ["SCORECAM_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()
