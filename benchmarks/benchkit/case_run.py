"""One case: ours in every backend, the peers and the limit, timed in this process."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import torch
from benchkit.agreement import agreement, explain_agreement, to_input_size
from benchkit.cases import Case, check_wrapper, log, nonconstant_channels
from benchkit.limit import best_plain_batch_size, run_limit
from benchkit.ours import case_backends, forward_of, run_ours
from benchkit.peers import RUNNERS
from benchkit.timing import Tool, measure_all

from scorecam_cli.cam import auto_batch_size

FULL_PROBE = (1, 2, 4, 8, 16, 32)  # batch sizes tried for plain forward passes
QUICK_PROBE = (2, 4, 8)
PEER_BATCH_SIZES = {"cpu": (4, 16), "cuda": (16, 32, 64)}  # besides the probe's best


def run_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """Time ours per backend, the peers and the limits on ``case``; the case's JSON."""
    device = case.images.device
    log(f"== {case.name}: layer {case.layer_label}, class {case.target}")
    check_wrapper(case)
    k, k_varying = nonconstant_channels(case)
    log(f"  K = {k} channels, {k_varying} not constant on this image")
    backends, load_seconds = case_backends(case, args.backends, args.threads)
    probe_sizes = sorted(set(args.probe_batch_sizes or (QUICK_PROBE if args.quick else FULL_PROBE)))
    probes: dict[str, dict[int, float]] = {}
    best: dict[str, int] = {}
    for name, backend in backends.items():
        forward = forward_of(case, backend)
        best[name], probes[name] = best_plain_batch_size(
            case, probe_sizes, args.precision, forward, name
        )
    fastest = min(best, key=lambda name: probes[name][best[name]])
    log(f"  best plain batch size per backend: {best}; fastest backend: {fastest}")

    ours_tools: dict[str, Tool] = {}
    for name, backend in backends.items():
        default = backend.batch_size or auto_batch_size(device)
        sizes = args.ours_batch_sizes or (
            sorted({default, best[name]})
            if args.quick
            else sorted({max(1, default // 2), default, best[name]})
        )
        run = partial(run_ours, case, precision=args.precision, backend=backend)
        ours_tools[name] = Tool(f"ours[{name}]", lambda bs, run=run: run(batch_size=bs), sizes)
    peer_best = best["torch"] if "torch" in best else best[fastest]  # the peers run in torch
    peer_sizes = args.peer_batch_sizes or (
        [peer_best] if args.quick else sorted({*PEER_BATCH_SIZES.get(device.type, ()), peer_best})
    )
    peer_tools = {
        name: Tool(name, lambda bs, name=name: RUNNERS[name](case, bs), peer_sizes)
        for name in args.peers
    }
    # The limit: plain passes in the fastest backend at its best batch size; for the K'
    # non-constant channels, and for the passes ours ran (known once ours has run: the sweep
    # times every ours tool before the limits).
    limit_forward = forward_of(case, backends[fastest])
    first_ours = next(iter(ours_tools.values()))

    def limit_passes(bs: int) -> int:
        return run_limit(case, first_ours.output.forward_passes, bs, args.precision, limit_forward)

    limit_tools = {
        "limit_nonconstant": Tool(
            "limit_nonconstant",
            lambda bs: run_limit(case, k_varying, bs, args.precision, limit_forward),
            [best[fastest]],
        ),
        "limit_passes": Tool("limit_passes", limit_passes, [best[fastest]]),
    }
    tools = [*ours_tools.values(), *peer_tools.values(), *limit_tools.values()]
    measure_all(tools, args.repeats, args.warmup == "run", device)
    return _case_json(case, args, k, k_varying, backends, load_seconds, probes, best, fastest,
                      ours_tools, peer_tools, limit_tools)  # fmt: skip


def _case_json(
    case: Case,
    args: argparse.Namespace,
    k: int,
    k_varying: int,
    backends: dict[str, Any],
    load_seconds: dict[str, float],
    probes: dict[str, dict[int, float]],
    best: dict[str, int],
    fastest: str,
    ours_tools: dict[str, Tool],
    peer_tools: dict[str, Tool],
    limit_tools: dict[str, Tool],
) -> dict[str, Any]:
    size = (case.size, case.size)
    out: dict[str, Any] = {
        **case.record(k, k_varying),
        "plain_forward_ms_per_image_by_backend_and_batch_size": {
            name: {str(b): 1000 * v for b, v in probe.items()} for name, probe in probes.items()
        },
        "best_plain_batch_size": best,
        "fastest_backend": fastest,
        "backend_load_seconds": load_seconds,
    }
    reference = ours_tools["torch"] if "torch" in ours_tools else ours_tools[fastest]
    reference_map = to_input_size(reference.output.maps[0, 0], size)
    out["ours"] = {}
    for name, tool in ours_tools.items():
        result = tool.output
        out["ours"][name] = {
            **tool.as_json(),
            "default_batch_size": backends[name].batch_size or auto_batch_size(case.images.device),
            "threads": backends[name].threads,
            "precision": args.precision,
            "forward_passes": result.forward_passes,
            "forward_passes_saved": result.forward_passes_saved,
            "agreement_with_torch": agreement(
                reference_map, to_input_size(result.maps[0, 0], size)
            ),
        }
    best_ours = min(ours_tools, key=lambda name: ours_tools[name].seconds)
    out["fastest_ours"] = best_ours
    peer_maps = {}
    for name, tool in peer_tools.items():
        peer_maps[name] = to_input_size(torch.as_tensor(tool.output), size)
        out[name] = {**tool.as_json(), "agreement": agreement(reference_map, peer_maps[name])}
        log(f"  {name} vs ours: {out[name]['agreement']}")
    passes = {"limit_nonconstant": k_varying, "limit_passes": reference.output.forward_passes}
    for key, tool in limit_tools.items():
        out[key] = {**tool.as_json(), "passes": passes[key], "backend": fastest}
    if args.explain_agreement and peer_maps:
        explained = explain_agreement(case, reference_map, peer_maps, reference.batch_size)
        for name, value in explained.items():
            out[name]["explained"] = value
    if args.profile:
        profile_ours(case, ours_tools[best_ours].batch_size, args.precision, backends[best_ours])
    ours_seconds = ours_tools[best_ours].seconds
    fastest_peer = min((t.seconds for t in peer_tools.values()), default=float("nan"))
    out["speedup_vs_fastest_peer"] = fastest_peer / ours_seconds
    out["efficiency"] = out["limit_passes"]["seconds"] / ours_seconds
    out["efficiency_nonconstant"] = out["limit_nonconstant"]["seconds"] / ours_seconds
    return out


def profile_ours(case: Case, batch_size: int, precision: str, backend: Any) -> None:
    """Where our time goes: torch profiler, top operators by self time (to stderr)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if case.images.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        run_ours(case, batch_size, precision, backend)
    sort = "self_cuda_time_total" if case.images.device.type == "cuda" else "self_cpu_time_total"
    log(prof.key_averages().table(sort_by=sort, row_limit=20))
