#!/usr/bin/env python
"""Benchmark scorecam-cli's exact Score-CAM core against pytorch-grad-cam and torchcam.

For each case (model, layer, image, input size) this times, in one process, on one device:

* ours: ``scorecam_cli.cam.compute_cams`` (exact Score-CAM, softmax weighting) at its auto batch
  size and a couple of others; the best is reported, with its batch size;
* pytorch-grad-cam's ``ScoreCAM`` and torchcam's ``ScoreCAM`` at batch sizes 16/32/64 and the
  model's best plain batch size (the best of them);
* the limit: K plain forward passes of the model (K = channels of the layer) on random inputs of
  the same shape in ``torch.inference_mode()``, at the model's best batch size, and the same for
  only the K' channels that are not constant on this image (what an exact method must run).

Every tool explains the same tensor of the same model for the same class (the plain model's
top-1), and the maps are compared after bilinear upsampling (``align_corners=False``) to the input
size and min-max normalisation: Pearson correlation and max abs difference versus ours.

The embedded EfficientNet-Lite0 calls its ``_swish`` module twice (stem and head), and a forward
hook on a module called twice fires twice; so all three tools get a wrapper whose head activation
is a module of its own (``head_act``), checked to give the same logits and the same activation as
``_swish:1`` of the original.

Run ``python benchmarks/bench.py --help``. Needs ``pip install grad-cam torchcam``.
Results: a table on stdout and JSON under ``benchmarks/results/``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

# pytorch-grad-cam draws a tqdm bar for every image; keep the benchmark's stderr readable.
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scorecam_cli.cam import (
    CamConfig,
    as_model_input,
    auto_batch_size,
    compute_cams,
    is_constant,
    normalise_maps,
    precision_context,
    prepare_model,
    resolve_device,
    upsample_maps,
)
from scorecam_cli.choices import PRECISIONS
from scorecam_cli.images import find_inputs, preprocess, read_image
from scorecam_cli.layers import capture, default_layer, parse_layer
from scorecam_cli.models import load_model

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "sample_images"
RESULTS = Path(__file__).resolve().parent / "results"
PEER_BATCH_SIZES = (16, 32, 64)
FULL_PROBE = (2, 4, 8, 16, 32, 64)  # batch sizes tried for plain forward passes
QUICK_PROBE = (4, 8, 16)
PROBE_IMAGES = 32  # images timed per probed batch size (at least two batches)
ALL_MODELS = ("efficientnet_lite0", "resnet18", "resnet50")
LAYERS = {"resnet18": "layer4", "resnet50": "layer4"}  # others: the model's default layer
QUICK_SIZES = {"efficientnet_lite0": 224, "resnet18": 96}  # quick mode: what fits in ~2 min
QUICK_MODELS = ("efficientnet_lite0", "resnet18")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------- the models


class HeadExposed(nn.Module):
    """EfficientNet-Lite0 with its head activation as a module of its own, ``head_act``.

    The original runs ``self._swish`` twice (stem and head); this wrapper runs the same modules in
    the same order, with a copy of ``_swish`` at the head, so any tool's hook on ``head_act`` sees
    exactly the head activation (``_swish:1`` of the original) once per forward pass.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head_act = copy.deepcopy(net._swish)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(inputs)))
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / len(net._blocks)
            x = block(x, drop_connect_rate=rate)
        x = self.head_act(net._bn1(net._conv_head(x)))  # (N, 1280, h, w)
        x = net._avg_pooling(x).flatten(1)  # (N, 1280)
        return net._fc(net._dropout(x))  # (N, C)


@dataclass
class Case:
    """One benchmark case: a model, the layer every tool explains, an image at an input size."""

    model_name: str
    image: Path
    size: int
    module: nn.Module = field(repr=False)
    layer: str  # a module name of ``module`` that runs once per forward pass
    layer_label: str  # how scorecam-cli names the same layer on the unwrapped model
    images: torch.Tensor = field(repr=False)  # (1, 3, H, W) normalised, on the device
    target: int = -1  # top-1 class of the plain model

    @property
    def name(self) -> str:
        return f"{self.model_name}@{self.size} {self.image.name}"


def build_model(name: str, device: torch.device) -> tuple[nn.Module, str, str, Any]:
    """(module on device, layer name in it, layer label, preprocessing) for one model name."""
    if name in LAYERS:
        torch.manual_seed(0)
        loaded = load_model(name, weights="none")
        layer = LAYERS[name]
        return prepare_model(loaded.module, device), layer, layer, loaded.preprocessing
    loaded = load_model(name)
    module = prepare_model(loaded.module, device)
    if name != "efficientnet_lite0":
        size = loaded.preprocessing.input_size
        ref = default_layer(module, size).ref
        if ref.call is not None:
            raise SystemExit(f"{name}: default layer {ref} runs more than once; not supported here")
        return module, ref.name, str(ref), loaded.preprocessing
    wrapped = prepare_model(HeadExposed(module), device)
    return wrapped, "head_act", "_swish:1", loaded.preprocessing


def check_wrapper(case: Case) -> None:
    """The wrapper must give the original's logits and its ``_swish:1`` activation, exactly."""
    if not isinstance(case.module, HeadExposed):
        return
    original = case.module.net
    with torch.inference_mode():
        with capture(original, parse_layer(original, "_swish:1")) as seen_a:
            logits_a = original(case.images)
        with capture(case.module, parse_layer(case.module, "head_act")) as seen_b:
            logits_b = case.module(case.images)
    diff_logits = float((logits_a - logits_b).abs().max())
    diff_acts = float((seen_a.value() - seen_b.value()).abs().max())
    if diff_logits > 0 or diff_acts > 0:
        raise SystemExit(f"wrapper differs from the model: logits {diff_logits}, acts {diff_acts}")
    log(
        "  wrapper check: head_act == _swish:1 and logits identical "
        f"(shape {tuple(seen_b.value().shape)})"
    )


# ------------------------------------------------------------------------------------- timing


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


# ------------------------------------------------------------------------------------- tools


def run_ours(case: Case, batch_size: int, precision: str) -> Any:
    """Our CamResult: raw maps (1, 1, h, w) and the forward passes we ran."""
    config = CamConfig(batch_size=batch_size, precision=precision)
    return compute_cams(case.module, case.layer, case.images, classes=[case.target], config=config)


def run_gradcam(case: Case, batch_size: int) -> np.ndarray:
    """pytorch-grad-cam's ScoreCAM: map (H, W), upsampled and min-max normalised by grad-cam."""
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = dict(case.module.named_modules())[case.layer]
    with ScoreCAM(model=case.module, target_layers=[layer]) as cam:
        cam.batch_size = batch_size
        maps = cam(input_tensor=case.images, targets=[ClassifierOutputTarget(case.target)])
    return maps[0]  # (H, W)


def run_torchcam(case: Case, batch_size: int) -> torch.Tensor:
    """torchcam's ScoreCAM, used as its docs show: map (h, w), min-max normalised."""
    from torchcam.methods import ScoreCAM

    shape = tuple(case.images.shape[1:])
    with ScoreCAM(case.module, case.layer, batch_size=batch_size, input_shape=shape) as extractor:
        with torch.inference_mode():
            case.module(case.images)
        maps = extractor(class_idx=case.target)
    return maps[0][0]  # (h, w)


def run_limit(case: Case, passes: int, batch_size: int, precision: str) -> int:
    """``passes`` plain forward passes of random inputs shaped like the case's, in batches."""
    device = case.images.device
    shape = case.images.shape[1:]
    generator = torch.Generator(device=device).manual_seed(0)
    batch = as_model_input(torch.randn((batch_size, *shape), generator=generator, device=device))
    done = 0
    with torch.inference_mode(), precision_context(device, precision):
        while done < passes:
            count = min(batch_size, passes - done)
            case.module(batch[:count])
            done += count
    return done


def best_plain_batch_size(case: Case, sizes: list[int], precision: str) -> tuple[int, dict]:
    """The batch size of best plain forward throughput: per size one warm batch, then at least
    ``PROBE_IMAGES`` images (two batches at least) timed. Returns it and ms per image by size."""
    device = case.images.device
    per_image: dict[int, float] = {}
    for bs in sizes:
        run_limit(case, bs, bs, precision)  # warm
        count = max(2 * bs, PROBE_IMAGES)
        seconds, _ = timed(lambda bs=bs, count=count: run_limit(case, count, bs, precision), device)
        per_image[bs] = seconds / count
        log(f"    plain forward probe: batch {bs}: {per_image[bs] * 1000:.2f} ms/image")
    return min(per_image, key=per_image.get), per_image


# ------------------------------------------------------------------------------------- maps


def to_input_size(raw: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False) upsampling of a map (h, w) to ``size``, then min-max."""
    raw = torch.as_tensor(raw).float().cpu()[None, None]  # (1, 1, h, w)
    if tuple(raw.shape[-2:]) != tuple(size):
        raw = upsample_maps(raw, size)
    return normalise_maps(raw)[0, 0].numpy()


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    a, b = ours.ravel().astype(np.float64), theirs.ravel().astype(np.float64)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {"pearson": corr, "max_abs_diff": float(np.abs(a - b).max())}


def convention_map(case: Case, convention: str, batch_size: int) -> torch.Tensor:
    """Score-CAM map (h, w) with the masks built the way one implementation builds them.

    ``ours``: upsample (bilinear, align_corners=False), then min-max per channel;
    ``grad-cam``: upsample with ``nn.UpsamplingBilinear2d`` (align_corners=True), then min-max;
    ``torchcam``: min-max at the layer's resolution, then upsample (align_corners=False).
    Softmax weighting over the raw target logits in all three. Used by --explain-agreement to
    tell which difference in mask building explains a map disagreement.
    """
    size = tuple(case.images.shape[-2:])
    acts = layer_activations(case)[0]  # (K, h, w)

    def minmax(x: torch.Tensor) -> torch.Tensor:  # per channel of (B, 1, *, *)
        low = x.amin(dim=(2, 3), keepdim=True)
        return (x - low) / (x.amax(dim=(2, 3), keepdim=True) - low + 1e-8)

    scores = []
    with torch.inference_mode():
        for start in range(0, len(acts), batch_size):
            part = acts[start : start + batch_size, None]  # (B, 1, h, w)
            if convention == "torchcam":
                masks = F.interpolate(minmax(part), size=size, mode="bilinear", align_corners=False)
            else:
                corners = convention == "grad-cam"
                masks = minmax(
                    F.interpolate(part, size=size, mode="bilinear", align_corners=corners)
                )
            logits = case.module(case.images * masks)  # (B, C)
            scores.append(logits[:, case.target].float())
    weights = torch.cat(scores).softmax(dim=0)  # (K,)
    return torch.einsum("k,khw->hw", weights, acts).relu()


def explain_agreement(case: Case, ours_map: np.ndarray, peer_maps: dict, batch_size: int) -> dict:
    """Each peer's map versus ours and versus our re-implementation of its mask convention."""
    size = tuple(case.images.shape[-2:])
    out = {}
    for name, peer_map in peer_maps.items():
        log(f"    explain: Score-CAM with {name}'s mask convention")
        redo = to_input_size(convention_map(case, name, batch_size), size)
        out[name] = {
            "convention_vs_peer": agreement(redo, peer_map),
            "convention_vs_ours": agreement(redo, ours_map),
        }
        log(f"    {name}: its convention vs {name}: {out[name]['convention_vs_peer']}")
    return out


# ------------------------------------------------------------------------------------- a case


def prepare_case(
    model_name: str, image: Path, size: int, device: torch.device, cache: dict[str, Any]
) -> Case:
    if model_name not in cache:
        cache.clear()  # one model in memory at a time
        cache[model_name] = build_model(model_name, device)
    module, layer, label, prep = cache[model_name]
    rgb = read_image(image)
    array = preprocess(rgb, (size, size), prep.mean, prep.std)  # (3, H, W)
    images = torch.from_numpy(array)[None].to(device)  # (1, 3, H, W)
    case = Case(model_name, image, size, module, layer, label, images)
    with torch.inference_mode():
        case.target = int(module(images).argmax(dim=1)[0])
    return case


def layer_activations(case: Case) -> torch.Tensor:
    """The case's layer activations A (1, K, h, w), float32, from one plain forward pass."""
    with torch.inference_mode(), capture(case.module, parse_layer(case.module, case.layer)) as seen:
        case.module(case.images)
    return seen.value().float()


def nonconstant_channels(case: Case) -> tuple[int, int]:
    """(K, K'): channels of the layer, and those the core does not treat as constant
    (:func:`scorecam_cli.cam.is_constant`) on this image."""
    acts = layer_activations(case).flatten(2)  # (1, K, h*w)
    varying = ~is_constant(acts.amin(dim=2), acts.amax(dim=2))  # (1, K)
    return int(acts.shape[1]), int(varying.sum())


def run_case(case: Case, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    log(f"== {case.name}: layer {case.layer_label}, class {case.target}")
    check_wrapper(case)
    k, k_varying = nonconstant_channels(case)
    log(f"  K = {k} channels, {k_varying} not constant on this image")
    auto = auto_batch_size(device)
    # The model's best batch size for plain forward passes; also the warm-up of every shape.
    probe_sizes = args.probe_batch_sizes or (QUICK_PROBE if args.quick else FULL_PROBE)
    best, probe = best_plain_batch_size(case, sorted(set(probe_sizes)), args.precision)
    log(f"  best plain batch size: {best}")
    if args.quick:  # one batch size for everyone: the probe's best
        ours_sizes = args.ours_batch_sizes or [best]
        peer_sizes = args.peer_batch_sizes or [best]
    else:  # ours: auto, auto/2, auto*2; peers: 16/32/64; both also the probe's best
        ours_sizes = args.ours_batch_sizes or sorted({max(1, auto // 2), auto, auto * 2, best})
        peer_sizes = args.peer_batch_sizes or sorted({*PEER_BATCH_SIZES, best})
    size = tuple(case.images.shape[-2:])
    out: dict[str, Any] = {
        "model": case.model_name,
        "layer": case.layer_label,
        "image": case.image.name,
        "input_size": case.size,
        "target_class": case.target,
        "channels": k,
        "nonconstant_channels": k_varying,
        "plain_forward_ms_per_image_by_batch_size": {str(b): 1000 * v for b, v in probe.items()},
        "best_plain_batch_size": best,
    }

    ours = Tool("ours", lambda bs: run_ours(case, bs, args.precision), ours_sizes)
    tools = [ours]
    if "grad-cam" in args.peers:
        tools.append(Tool("grad-cam", lambda bs: run_gradcam(case, bs), peer_sizes))
    if "torchcam" in args.peers:
        tools.append(Tool("torchcam", lambda bs: run_torchcam(case, bs), peer_sizes))
    # Quick mode times only the K' passes and scales them to K (same model, shape and batch).
    limits = {"limit_nonconstant": k_varying} | ({} if args.quick else {"limit_all": k})
    for key, passes in limits.items():
        run = partial(run_limit, case, passes, precision=args.precision)
        tools.append(
            Tool(f"{key} ({passes} passes)", lambda bs, run=run: run(batch_size=bs), [best])
        )
    measure_all(tools, args.repeats, args.warmup == "run", device)
    by_label = {t.label.split(" ")[0]: t for t in tools}

    result = ours.output
    ours_map = to_input_size(result.maps[0, 0], size)
    out["ours"] = {
        **ours.as_json(),
        "auto_batch_size": auto,
        "precision": args.precision,
        "forward_passes": result.forward_passes,
        "forward_passes_saved": result.forward_passes_saved,
    }
    peer_maps = {}
    for name in ("grad-cam", "torchcam"):
        if name in by_label:
            peer_maps[name] = to_input_size(torch.as_tensor(by_label[name].output), size)
            out[name] = {
                **by_label[name].as_json(),
                "agreement": agreement(ours_map, peer_maps[name]),
            }
            log(f"  {name} vs ours: {out[name]['agreement']}")
    for key, passes in limits.items():
        out[key] = {**by_label[key].as_json(), "passes": passes, "estimated": False}
    if args.quick:
        scaled = out["limit_nonconstant"]["seconds"] * k / max(1, k_varying)
        out["limit_all"] = {"batch_size": best, "seconds": scaled, "passes": k, "estimated": True}
    if args.explain_agreement and peer_maps:
        explained = explain_agreement(case, ours_map, peer_maps, ours.batch_size)
        for name, value in explained.items():
            out[name]["explained"] = value
    if args.profile:
        profile_ours(case, ours.batch_size, args.precision)

    peers = [by_label[name] for name in peer_maps]
    fastest_peer = min((t.seconds for t in peers), default=float("nan"))
    out["speedup_vs_fastest_peer"] = fastest_peer / ours.seconds
    out["efficiency"] = out["limit_nonconstant"]["seconds"] / ours.seconds
    return out


def profile_ours(case: Case, batch_size: int, precision: str) -> None:
    """Where our time goes: torch profiler, top operators by self time (to stderr)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if case.images.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        run_ours(case, batch_size, precision)
    sort = "self_cuda_time_total" if case.images.device.type == "cuda" else "self_cpu_time_total"
    log(prof.key_averages().table(sort_by=sort, row_limit=20))


# ------------------------------------------------------------------------------------- e2e


def scorecam_command() -> list[str]:
    exe = Path(sys.executable).parent / "scorecam"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scorecam_cli"]


def image_files(folder: Path) -> list[Path]:
    """The images ``scorecam run FOLDER`` explains, in its order."""
    return [item.path for item in find_inputs([str(folder)])]


def core_worker(args: argparse.Namespace) -> int:
    """The core alone, in a fresh process like the CLI's: time ``compute_cams`` on the folder's
    images (decoded and stacked beforehand), save the raw maps, print the seconds as JSON."""
    device = resolve_device(args.device)
    loaded = load_model("efficientnet_lite0")
    module = prepare_model(loaded.module, device)
    prep = loaded.preprocessing
    ref = default_layer(module, prep.input_size).ref
    rgbs = [read_image(p) for p in image_files(args.e2e_folder)]
    arrays = [preprocess(rgb, prep.input_size, prep.mean, prep.std) for rgb in rgbs]
    batch = torch.from_numpy(np.stack(arrays)).to(device)  # (N, 3, H, W)
    config = CamConfig(batch_size=args.e2e_batch_size, precision=args.precision)
    with torch.inference_mode():  # warm: one plain batch, as the CLI's first batch is cold too
        module(batch[: args.e2e_batch_size])
    seconds, result = timed(lambda: compute_cams(module, ref, batch, config=config), device)
    np.save(args.core_worker, result.maps[:, 0].float().cpu().numpy())  # (N, h, w)
    print(json.dumps({"core_seconds": seconds, "images": len(rgbs)}))
    return 0


def end_to_end(args: argparse.Namespace, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Images per second of ``scorecam run FOLDER`` versus the core alone on the same images.

    Both run in fresh processes, alternating, ``--repeats`` rounds (at most 2); both use the
    embedded model, its default layer and input size, and ``batch_size``. The CLI also starts
    Python, loads the model, decodes, renders and writes; the core times ``compute_cams`` alone.
    """
    command = scorecam_command()
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    folder = args.e2e_folder
    paths = image_files(folder)
    n, bs = len(paths), batch_size
    rounds = max(1, min(2, args.repeats))
    log(f"== end-to-end: scorecam run on {n} images, batch size {bs}, {rounds} round(s)")

    # What any run pays before its first image: interpreter, imports, the model.
    startup_code = (
        "import torch, scorecam_cli.cam\n"
        "from scorecam_cli.models import load_model; load_model('efficientnet_lite0')"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", startup_code], check=False, capture_output=True, env=env)
    startup = time.perf_counter() - start

    cli_runs, core_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        maps_file = Path(tmp) / "core_maps.npy"
        worker = [
            sys.executable, str(Path(__file__).resolve()), "--core-worker", str(maps_file),
            "--e2e-folder", str(folder), "--e2e-batch-size", str(bs), "--device", str(device),
            "--precision", args.precision,
        ]  # fmt: skip
        for round_ in range(rounds):
            out_dir = Path(tmp) / f"out{round_}"
            cli = [*command, "--quiet", "run", str(folder), "-o", str(out_dir), "--format",
                   "jsonl", "--batch-size", str(bs), "--device", str(device)]  # fmt: skip
            start = time.perf_counter()
            proc = subprocess.run(cli, capture_output=True, text=True, env=env, check=False)
            cli_runs.append(time.perf_counter() - start)
            records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
            log(f"  cli: {cli_runs[-1]:.2f} s, exit {proc.returncode}, {len(records)} records")
            if proc.returncode != 0 or not records:
                tail = proc.stderr.strip()[-1000:]
                log(f"  cli stderr: {tail}")
                return {
                    "skipped": f"`{' '.join(cli)}` exited {proc.returncode} with "
                    f"{len(records)} records: {tail}"
                }
            core = subprocess.run(worker, capture_output=True, text=True, env=env, check=True)
            core_runs.append(json.loads(core.stdout.strip().splitlines()[-1])["core_seconds"])
            log(f"  core: {core_runs[-1]:.2f} s for {n} images")
        core_maps = torch.from_numpy(np.load(maps_file))  # (N, h, w)
        agreement_min = check_cli_maps(records, paths, core_maps)

    cli_seconds, core_seconds = statistics.median(cli_runs), statistics.median(core_runs)
    return {
        "images": n,
        "batch_size": bs,
        "command": " ".join(cli),
        "exit_code": proc.returncode,
        "records": len(records),
        "cli_runs": cli_runs,
        "core_runs": core_runs,
        "cli_seconds": cli_seconds,
        "cli_images_per_second": n / cli_seconds,
        "core_seconds": core_seconds,
        "core_images_per_second": n / core_seconds,
        "startup_seconds": startup,
        "overhead_seconds_per_image": (cli_seconds - startup - core_seconds) / n,
        "cli_vs_core_min_pearson": agreement_min,
    }


def check_cli_maps(records: list[dict], paths: list[Path], core_maps: torch.Tensor) -> float | None:
    """Lowest correlation between the CLI's .npy maps and the core's, at the CLI maps' size."""
    worst = None
    index = {p.resolve(): i for i, p in enumerate(paths)}
    for record in records:
        try:
            i = index[Path(record["input"]).resolve()]
            theirs = np.load(record["npy"])
            ours = to_input_size(core_maps[i], tuple(theirs.shape[:2]))
            corr = agreement(ours, to_input_size(torch.from_numpy(theirs), ours.shape))["pearson"]
        except (KeyError, OSError, ValueError) as exc:
            log(f"  cannot compare a CLI map ({type(exc).__name__}: {exc})")
            continue
        worst = corr if worst is None else min(worst, corr)
    return worst


# ------------------------------------------------------------------------------------- report


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def print_table(cases: list[dict[str, Any]]) -> None:
    header = (
        f"{'case':<32} {'ours s/img (bs)':>16} {'grad-cam (bs)':>15} {'torchcam (bs)':>15} "
        f"{'limit K':>8} {'limit K_nc':>10} {'speed-up':>8} {'effic.':>6} {'passes/K (K_nc)':>17} "
        f"{'gc corr / maxdiff':>19} {'tc corr / maxdiff':>19}"
    )
    print(header)
    print("-" * len(header))
    for c in cases:
        name = f"{c['model']}@{c['input_size']} {c['image']}"

        def timing(key: str, c: dict = c) -> str:
            t = c.get(key)
            return "-" if t is None else f"{t['seconds']:.3f} ({t['batch_size']})"

        def agree(key: str, c: dict = c) -> str:
            t = c.get(key)
            if t is None:
                return "-"
            a = t["agreement"]
            return f"{a['pearson']:.5f} / {a['max_abs_diff']:.3f}"

        passes = f"{c['ours']['forward_passes']}/{c['channels']} ({c['nonconstant_channels']})"
        limit_all = f"{'~' if c['limit_all']['estimated'] else ''}{c['limit_all']['seconds']:.3f}"
        print(
            f"{name:<32} {timing('ours'):>16} {timing('grad-cam'):>15} {timing('torchcam'):>15} "
            f"{limit_all:>8} {c['limit_nonconstant']['seconds']:>10.3f} "
            f"{c['speedup_vs_fastest_peer']:>7.2f}x {c['efficiency']:>6.2f} {passes:>17} "
            f"{agree('grad-cam'):>19} {agree('torchcam'):>19}"
        )
    print(
        "seconds per image (1 image per case; bs = best batch size); limit K / K_nc: K or K_nc "
        "plain forward passes at the model's best batch size (~: scaled from K_nc); speed-up = "
        "fastest peer / ours; effic. = limit K_nc / ours (above 1 when channels with identical "
        "masks share a pass); passes: masked passes ours ran (incl. the shared zero mask) / K "
        "(non-constant); corr / maxdiff: maps vs ours at input size, min-max normalised."
    )


def print_e2e(e2e: dict[str, Any]) -> None:
    if "skipped" in e2e:
        print(f"end-to-end: {e2e['skipped']}")
        return
    print(
        f"end-to-end ({e2e['images']} images, batch {e2e['batch_size']}): scorecam run "
        f"{e2e['cli_images_per_second']:.3f} img/s ({e2e['cli_seconds']:.2f} s, exit "
        f"{e2e['exit_code']}, {e2e['records']} records) vs core "
        f"{e2e['core_images_per_second']:.3f} img/s ({e2e['core_seconds']:.2f} s); "
        f"startup {e2e['startup_seconds']:.2f} s; overhead "
        f"beyond startup {e2e['overhead_seconds_per_image']:.3f} s/image; CLI maps vs core: min "
        f"Pearson {e2e['cli_vs_core_min_pearson']}"
    )


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "scorecam-cli", "grad-cam", "torchcam", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


# ------------------------------------------------------------------------------------- main


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Every case first probes the plain model's forward throughput at a few batch sizes; "
            "the best one (the model's best batch size) is used for the limit and also tried for "
            "ours and the peers.\n"
            "Full mode: efficientnet_lite0 on coffee.png and chelsea.png, random-init resnet18 and "
            "resnet50 (layer4) on coffee.png, at --size (224); batch sizes: ours auto, auto/2, "
            "auto*2; peers 16/32/64; one warm-up run per tool, then the median of --repeats (3) at "
            "the best batch size; then the end-to-end run of `scorecam run`.\n"
            f"Quick mode (--quick, about 2 minutes on 2 CPU cores): {', '.join(QUICK_MODELS)} on "
            f"coffee.png at input sizes {QUICK_SIZES} (--size overrides), every tool at the best "
            "plain batch size only, the probe's batches as the only warm-up, 1 repeat, the limit "
            "for all K channels scaled from the K' one, no end-to-end run (--e2e forces it)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="short run (about 2 min on 2 CPU cores)"
    )
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma-separated models from {', '.join(ALL_MODELS)}, or none for only the "
        "end-to-end part (default: all; "
        f"quick: {', '.join(QUICK_MODELS)})",
    )
    parser.add_argument(
        "--images",
        default=None,
        help="comma-separated files in sample_images/ (default: coffee.png, and "
        "chelsea.png for efficientnet_lite0 in full mode)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="input size H = W (default 224; quick: per model, see below)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="ours and the limit only; the peers always run fp32",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (quick: 1, full: 3)")
    parser.add_argument("--peers", default="grad-cam,torchcam", help="peers to time (comma list)")
    parser.add_argument(
        "--ours-batch-sizes",
        type=int_list,
        default=None,
        help="batch sizes for ours (default: auto, auto/2, auto*2 and the best "
        "plain batch size; quick: the best plain batch size)",
    )
    parser.add_argument(
        "--peer-batch-sizes",
        type=int_list,
        default=None,
        help="batch sizes for the peers (default: 16, 32, 64 and the best plain "
        "batch size; quick: the best plain batch size)",
    )
    parser.add_argument(
        "--probe-batch-sizes",
        type=int_list,
        default=None,
        help=f"batch sizes probed for plain forward throughput (default "
        f"{','.join(map(str, FULL_PROBE))}; quick: {','.join(map(str, QUICK_PROBE))})",
    )
    parser.add_argument(
        "--warmup",
        choices=["run", "batch"],
        default=None,
        help="run: one untimed full run per tool before timing (full default); "
        "batch: only the probe's warm batches (quick default)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--e2e",
        action="store_true",
        help="also time `scorecam run` end to end (always on in full mode)",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end part")
    parser.add_argument(
        "--e2e-folder",
        type=Path,
        default=IMAGES,
        help="images for the end-to-end part (default sample_images/)",
    )
    parser.add_argument(
        "--e2e-batch-size",
        type=int,
        default=None,
        help="batch size of the end-to-end part, CLI and core alike (default: the "
        "best plain batch size of efficientnet_lite0@224 in this run, else auto)",
    )
    parser.add_argument(
        "--explain-agreement",
        action="store_true",
        help="recompute each peer's map with our own code and its mask convention "
        "(align_corners, normalise before/after upsampling); K more passes each",
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.1,
        help="retry a run during which other processes used more than this share of the CPUs "
        "(from /proc/stat), after waiting for quiet (default 0.1; 1 turns the guard off)",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="retries of a contended run (default 3)"
    )
    parser.add_argument("--core-worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a torch profile of one of our runs per case (to stderr)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the JSON (default benchmarks/results/<device>-<mode>.json)",
    )
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.warmup = args.warmup or ("batch" if args.quick else "run")
    if args.models == "none":  # only the end-to-end part
        models = []
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
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, Path, int]]:
    cases = []
    for model in args.models:
        if args.images:
            names = args.images.split(",")
        elif model == "efficientnet_lite0" and not args.quick:
            names = ["coffee.png", "chelsea.png"]
        else:
            names = ["coffee.png"]
        size = args.size or (QUICK_SIZES.get(model, 224) if args.quick else 224)
        cases += [(model, IMAGES / name, size) for name in names]
    return cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.core_worker:
        return core_worker(args)
    GUARD.update(max_others=args.max_others, retries=args.retries)
    device = resolve_device(args.device)
    mode = "quick" if args.quick else "full"
    json_path = args.json or RESULTS / f"{device.type}-{mode}.json"
    cases = plan(args)
    log(
        f"scorecam-cli benchmark, {mode} mode on {device} ({device_name(device)}), "
        f"{torch.get_num_threads()} threads, repeats {args.repeats}, precision {args.precision}"
    )
    log("cases: " + "; ".join(f"{m}@{s} {p.name}" for m, p, s in cases))
    if args.quick:
        log(
            "quick: every tool at the model's best plain batch size only, warm-up = the probe's "
            "batches, 1 repeat"
        )
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    results = []
    cache: dict[str, Any] = {}
    for model_name, image, size in cases:
        case = prepare_case(model_name, image, size, device, cache)
        results.append(run_case(case, args, device))
    cache.clear()
    e2e = None
    if (args.e2e or not args.quick) and not args.no_e2e:
        # The batch size the embedded model ran best at in this run's probe, else the auto one.
        probed = [
            c["best_plain_batch_size"]
            for c in results
            if c["model"] == "efficientnet_lite0" and c["input_size"] == 224
        ]
        e2e_bs = args.e2e_batch_size or (probed[0] if probed else auto_batch_size(device))
        try:
            e2e = end_to_end(args, device, e2e_bs)
        except Exception as exc:  # keep the timings already taken
            log(f"== end-to-end failed: {type(exc).__name__}: {exc}")
            e2e = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
    elapsed = time.perf_counter() - started

    print_table(results)
    if e2e is not None:
        print_e2e(e2e)
    print(f"total {elapsed:.0f} s")
    timed_runs = [
        r for c in results for v in c.values() if isinstance(v, dict)
        for r in v.get("runs_at_best", [])
    ]  # fmt: skip
    peak = max((r["load"] for r in timed_runs), default=0.0)
    contended = [r for r in timed_runs if r["others"] > args.max_others]
    if contended:
        print(
            f"warning: {len(contended)} of the {len(timed_runs)} runs at the best batch sizes "
            f"ran while other processes used over {args.max_others:.0%} of the CPUs (up to "
            f"{max(r['others'] for r in contended):.0%}): those timings are unreliable"
        )

    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else argv,
        "mode": mode,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "peak_load_during_timed_runs": peak,
        "contended_runs": len(contended),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "platform": platform.platform(),
        "versions": versions(),
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


if __name__ == "__main__":
    sys.exit(main())
