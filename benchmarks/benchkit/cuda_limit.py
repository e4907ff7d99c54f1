"""Step 5 of the CUDA check: the limit of any exact method on this GPU, and our efficiency.

For each case of step 2 (its part file gives the passes ours ran and ours' seconds, per
precision): plain forward passes per second of the same model over ``probe_batch_sizes`` at each
precision (``limit.best_plain_batch_size``, channels_last as the tool runs), then, at each
precision's best batch size, exactly the passes ours ran as plain passes of random inputs
(``limit.run_limit``), timed. Efficiency = that limit / ours' seconds at the same precision;
the best precision is the one of most plain passes per second.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from benchkit.cuda_plan import Deadline, Part, Plan, SkipCase, load_case, log, read_part, run_cases
from benchkit.limit import best_plain_batch_size, run_limit
from benchkit.timing import timed

from scorecam_cli.devices import as_model_input

MIN_SECONDS_FOR_A_CASE = 10.0


def limit_case(name: str, size: int, compared: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """Plain-pass throughput per precision and batch size, and the limit against ours."""
    case = load_case(name, size, plan.device)

    def forward(images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C), as ours runs it
        return case.module(as_model_input(images))

    out: dict[str, Any] = {"model": name, "input_size": size, "precisions": {}}
    for precision in plan.precisions:
        ours = compared["ours"].get(precision)
        best, per_image = best_plain_batch_size(
            case, list(plan.probe_batch_sizes), precision, forward, f"{name} {precision}"
        )
        entry: dict[str, Any] = {
            "plain_passes_per_second_by_batch_size": {
                str(bs): 1 / s for bs, s in per_image.items()
            },
            "best_batch_size": best,
            "plain_passes_per_second": 1 / per_image[best],
        }
        if ours is not None:
            passes = ours["forward_passes"]
            plain = partial(run_limit, case, passes, best, precision, forward)
            seconds, _ = timed(plain, case.images.device)
            entry.update(
                passes=passes,
                limit_seconds=seconds,
                ours_seconds=ours["seconds"],
                ours_batch_size=ours["batch_size"],
                efficiency=seconds / ours["seconds"],
            )
            log(
                f"  {name} {precision}: limit {seconds:.3f} s for {passes} passes (batch {best}),"
                f" ours {ours['seconds']:.3f} s: efficiency {entry['efficiency']:.2f}"
            )
        out["precisions"][precision] = entry
    fastest = max(out["precisions"], key=lambda p: out["precisions"][p]["plain_passes_per_second"])
    out["best_precision"] = fastest
    return out


def run(plan: Plan, part: Part, deadline: Deadline) -> None:
    compared = read_part(part.path.parent, "compare") or {}
    by_model = {c["model"]: c for c in compared.get("cases", [])}
    part.save(cases=[], skipped=[])

    def measure(name: str, size: int) -> dict[str, Any]:
        if name not in by_model:
            raise SkipCase("not in step 2's results")
        return limit_case(name, size, by_model[name], plan)

    run_cases(plan, part, deadline, MIN_SECONDS_FOR_A_CASE, measure)
