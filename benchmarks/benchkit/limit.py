"""The limit of any exact method: plain forward passes it cannot avoid, at the best batch size."""

from __future__ import annotations

from typing import Any

import torch
from benchkit.cases import Case, log
from benchkit.ours import Forward
from benchkit.timing import timed

from scorecam_cli.devices import precision_context

PROBE_IMAGES = 32  # images timed per probed batch size (at least two batches)


def run_limit(case: Case, passes: int, batch_size: int, precision: str, forward: Forward) -> int:
    """``passes`` plain forward passes of random inputs shaped like the case's, in batches."""
    device = case.images.device
    shape = case.images.shape[1:]
    generator = torch.Generator(device=device).manual_seed(0)
    batch = torch.randn((batch_size, *shape), generator=generator, device=device)
    done = 0
    with torch.inference_mode(), precision_context(device, precision):
        while done < passes:
            count = min(batch_size, passes - done)
            forward(batch[:count])
            done += count
    return done


def best_plain_batch_size(
    case: Case,
    sizes: list[int],
    precision: str,
    forward: Forward,
    label: str,
    images: int = PROBE_IMAGES,
) -> tuple[int, dict[int, float]]:
    """The batch size of best plain forward throughput: per size one warm batch, then at least
    ``images`` images (two batches at least) timed. Returns it and s per image by size."""
    device = case.images.device
    per_image: dict[int, float] = {}
    for bs in sizes:
        run_limit(case, bs, bs, precision, forward)  # warm
        count = max(2 * bs, images)

        def probe(bs: int = bs, count: int = count) -> Any:
            return run_limit(case, count, bs, precision, forward)

        seconds, _ = timed(probe, device)
        per_image[bs] = seconds / count
        log(f"    {label} plain forward probe: batch {bs}: {per_image[bs] * 1000:.2f} ms/image")
    return min(per_image, key=lambda b: per_image[b]), per_image
