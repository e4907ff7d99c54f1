"""Step 3 of the CUDA check: the batch sweep that sets the CUDA defaults, and the OOM back-off.

Rows, in this order (the budget may stop it; every row is saved as it is measured):

1. the embedded model, 8 images per ``compute_cams`` call: masked images per pass over
   ``sweep_batch_sizes``, at fp32 and at fp16, channels_last on (as the tool runs);
2. the same with channels_last off at each precision's best batch size: the model's weights and
   the masked inputs in NCHW (the first, plain pass of the call still gets channels_last input);
   then with ``torch.backends.cudnn.benchmark`` on (cuDNN times its algorithms per shape);
3. images per call over ``sweep_image_batches`` at fp32's best batch size;
4. the out-of-memory back-off, once: resnet50 (random init, ``layer4``) at 1024 masked images
   per pass under a memory cap that holds far fewer (``torch.cuda``'s per-process fraction); it
   must halve the chunk until it fits and give the maps of an uncapped run;
5. resnet50, one image: masked images per pass at fp32 and bf16.

Each row: one warm-up call, then the median of ``REPEATS`` timed calls; seconds per image,
passes per second, peak GPU memory.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from benchkit.agreement import agreement, to_input_size
from benchkit.cases import IMAGES, Case
from benchkit.cuda_plan import Deadline, Part, Plan, load_case, log
from benchkit.timing import sync, timed

from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.devices import as_model_input

REPEATS = 2
IMAGES_PER_CALL = 8
OOM_BATCH = 1024
OOM_HEADROOM = 3  # the cap holds the buffer plus this many peaks of a 64-image plain pass
MIN_SECONDS_FOR_A_ROW = 6.0


def image_batch(case: Case, count: int, cache: dict[str, Any]) -> torch.Tensor:
    """``count`` images (count, 3, H, W) preprocessed for the case's model (``cache`` holds it):
    the sample photos, then their mirror images, then again."""
    photos = sorted(p for p in IMAGES.iterdir() if p.suffix in (".png", ".jpg"))
    device = case.images.device
    singles = [load_case(case.model_name, case.size, device, p, cache).images for p in photos]
    singles += [image.flip(-1) for image in singles]
    return torch.cat([singles[n % len(singles)] for n in range(count)])  # (count, 3, H, W)


def time_row(
    case: Case,
    images: torch.Tensor,
    batch_size: int,
    precision: str,
    channels_last: bool,
    cudnn_benchmark: bool = False,
) -> dict[str, Any]:
    """One warm-up ``compute_cams`` call, then REPEATS timed ones; the row."""
    device = images.device
    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if not channels_last:
        case.module.to(memory_format=torch.contiguous_format)
    # channels_last off: the masked passes get the (NCHW) buffer as it is, not as_model_input's copy
    score_batch = None if channels_last else case.module
    config = CamConfig(batch_size=batch_size, precision=precision)

    def call() -> Any:
        return compute_cams(case.module, case.layer, images, config=config, score_batch=score_batch)

    try:
        call()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs = [timed(call, device) for _ in range(REPEATS)]
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
        if not channels_last and device.type == "cuda":
            case.module.to(memory_format=torch.channels_last)
    seconds = statistics.median(s for s, _ in runs)
    passes = runs[0][1].forward_passes
    row = {
        "model": case.model_name,
        "images": len(images),
        "batch_size": batch_size,
        "precision": precision,
        "channels_last": channels_last,
        "cudnn_benchmark": cudnn_benchmark,
        "seconds": seconds,
        "seconds_per_image": seconds / len(images),
        "forward_passes": passes,
        "passes_per_second": passes / seconds,
        "all_seconds": [s for s, _ in runs],
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    log(
        f"  {row['model']} {len(images)} images, batch {batch_size}, {precision}, channels_last "
        f"{channels_last}, cudnn.benchmark {cudnn_benchmark}: {seconds:.3f} s "
        f"({row['passes_per_second']:.0f} passes/s)"
    )
    return row


def best_of(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The fastest row (seconds per image) among those whose fields equal ``match``."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return min(found, key=lambda r: r["seconds_per_image"], default=None)


def exercise_oom_backoff(case: Case, plan: Plan) -> dict[str, Any]:
    """Run ``compute_cams`` at OOM_BATCH under a cap it cannot fit; the chunk sizes it tried,
    whether it finished, and its maps against an uncapped run's. In a dry run (CPU) the
    out-of-memory error is raised by the forward function above a batch of 2 instead."""
    device = case.images.device
    batch = 2 * plan.sweep_batch_sizes[-1] if plan.dry_run else OOM_BATCH
    attempts: list[int] = []  # batch sizes the masked passes were called with
    finished: list[int] = []  # those that returned

    def forward(images: torch.Tensor) -> torch.Tensor:
        attempts.append(len(images))
        if plan.dry_run and len(images) > 2:
            raise torch.OutOfMemoryError("dry run: injected out-of-memory error")
        logits = case.module(as_model_input(images))
        finished.append(len(images))
        return logits

    cap = _cap_memory(case) if device.type == "cuda" else None
    outcome: dict[str, Any] = {"batch_size": batch, "cap": cap}
    try:
        config = CamConfig(batch_size=batch)
        capped = compute_cams(
            case.module, case.layer, case.images, config=config, score_batch=forward
        )
        sync(device)
        outcome["finished"] = True
    except Exception as exc:  # recorded: this is what the step checks
        outcome["finished"] = False
        first_line = (str(exc).splitlines() or [""])[0]
        outcome["error"] = f"{type(exc).__name__}: {first_line[:300]}"
    finally:
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()
    outcome["calls"] = _runs(attempts)  # [batch size, calls] in call order
    outcome["out_of_memory_errors"] = len(attempts) - len(finished)
    outcome["largest_that_ran"] = max(finished, default=0)
    if outcome["finished"]:
        plain = compute_cams(
            case.module,
            case.layer,
            case.images,
            config=CamConfig(batch_size=outcome["largest_that_ran"]),
        )
        size = (case.size, case.size)
        outcome["forward_passes"] = [capped.forward_passes, plain.forward_passes]
        outcome["agreement_with_uncapped"] = agreement(
            to_input_size(plain.maps[0, 0], size), to_input_size(capped.maps[0, 0], size)
        )
    log(f"  OOM back-off: {outcome}")
    return outcome


def _runs(values: list[int]) -> list[list[int]]:
    """Run-length encoding: [3, 3, 1] -> [[3, 2], [1, 1]]."""
    out: list[list[int]] = []
    for value in values:
        if out and out[-1][0] == value:
            out[-1][1] += 1
        else:
            out.append([value, 1])
    return out


def _cap_memory(case: Case) -> dict[str, float]:
    """Cap this process's CUDA memory to the masked-image buffer of OOM_BATCH plus OOM_HEADROOM
    peaks of a plain 64-image pass (measured here), above what is allocated now."""
    device = case.images.device
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    probe = case.images.expand(64, -1, -1, -1).contiguous()
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        case.module(as_model_input(probe))
    peak = torch.cuda.max_memory_allocated(device) - base
    del probe
    torch.cuda.empty_cache()
    buffer = OOM_BATCH * case.images[0].numel() * case.images.element_size()
    limit = base + buffer + OOM_HEADROOM * peak
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), device)
    return {"limit_gib": limit / 2**30, "peak_64_gib": peak / 2**30, "total_gib": total / 2**30}


def run(plan: Plan, part: Part, deadline: Deadline) -> None:
    rows: list[dict[str, Any]] = []
    part.save(rows=rows, skipped=[])
    cnn, resnet = (("tiny", 64), ("tiny", 64)) if plan.dry_run else plan.models[:2]
    cache: dict[str, Any] = {}  # the model, for every image of the batches
    case = load_case(*cnn, plan.device, cache=cache)
    images = image_batch(case, IMAGES_PER_CALL if not plan.dry_run else 2, cache)
    low = "fp16"

    def add(
        target: Case,
        batch_images: torch.Tensor,
        bs: int,
        precision: str,
        cl: bool,
        benchmark: bool = False,
    ) -> None:
        label = (f"{target.model_name} {len(batch_images)} images bs {bs} {precision} "
                 f"channels_last {cl} cudnn.benchmark {benchmark}")  # fmt: skip
        if deadline.left() < MIN_SECONDS_FOR_A_ROW:
            part.data["skipped"].append(label)
            return
        try:
            rows.append(time_row(target, batch_images, bs, precision, cl, benchmark))
        except Exception as exc:  # recorded; the sweep goes on
            part.data["skipped"].append(f"{label}: failed: {type(exc).__name__}: {exc}"[:500])
            log(f"  {label} failed: {type(exc).__name__}: {exc}")
        part.save(seconds=deadline.elapsed())

    for precision in ("fp32", low):
        for bs in plan.sweep_batch_sizes:
            add(case, images, bs, precision, True)
    for precision in ("fp32", low):
        best = best_of(rows, model=case.model_name, precision=precision, cudnn_benchmark=False)
        if best:
            add(case, images, best["batch_size"], precision, False)
            add(case, images, best["batch_size"], precision, True, benchmark=True)
    best = best_of(
        rows, model=case.model_name, precision="fp32", channels_last=True, cudnn_benchmark=False
    )
    if best:
        for count in plan.sweep_image_batches:
            if count != len(images):
                add(case, image_batch(case, count, cache), best["batch_size"], "fp32", True)
    del case, images
    cache.clear()
    case = load_case(*resnet, plan.device)
    part.save(oom_backoff=exercise_oom_backoff(case, plan) if deadline.left() > 5 else "skipped")
    for precision in ("fp32", "bf16"):
        for bs in plan.sweep_batch_sizes:
            add(case, case.images, bs, precision, True)
    part.save(best=_best_settings(rows), complete=True, seconds=deadline.elapsed())


def _best_settings(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model and precision: the fastest batch size, and what channels_last and images per
    call changed at that batch size (ratios of seconds per image; above 1: slower)."""
    best: dict[str, Any] = {}
    for model in sorted({r["model"] for r in rows}):
        for precision in sorted({r["precision"] for r in rows if r["model"] == model}):
            top = best_of(
                rows,
                model=model,
                precision=precision,
                channels_last=True,
                cudnn_benchmark=False,
                images=_default_images(rows, model),
            )
            if top is None:
                continue
            entry: dict[str, Any] = {
                "batch_size": top["batch_size"],
                "seconds_per_image": top["seconds_per_image"],
            }
            for key, match in (
                ("channels_last_off_ratio", {"channels_last": False}),
                ("cudnn_benchmark_ratio", {"cudnn_benchmark": True}),
            ):
                other = best_of(rows, model=model, precision=precision, **match)
                if other:
                    entry[key] = other["seconds_per_image"] / top["seconds_per_image"]
            others = [
                r
                for r in rows
                if r["model"] == model
                and r["precision"] == precision
                and r["images"] != top["images"]
                and r["channels_last"]
                and not r["cudnn_benchmark"]
            ]
            entry["images_per_call_ratio"] = {
                str(r["images"]): r["seconds_per_image"] / top["seconds_per_image"] for r in others
            }
            best[f"{model}/{precision}"] = entry
    return best


def _default_images(rows: list[dict[str, Any]], model: str) -> int:
    """Images per call of a model's batch-size rows (the first row's)."""
    return next(r["images"] for r in rows if r["model"] == model)
