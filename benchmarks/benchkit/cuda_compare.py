"""Step 2 of the CUDA check: exact Score-CAM per image, ours at each precision against
pytorch-grad-cam and torchcam (fp32, each at its best batch size), on the same GPU in the same
process, on the same image, model and layer tensor (``benchkit/cases.py``, ``vit_case.py``).

Per case: K channels, the K' not constant, the masked passes ours ran (the channels that needed
a pass of their own, and the shared all-zero pass), each tool's seconds per batch size and at its
best (median of ``repeats``, after one untimed run at every batch size), every map's agreement
with ours at fp32 (Pearson and max abs difference after min-max at the input size), and ours at
fp32 with TF32 off (torch lets cuDNN use TF32 for float32 convolutions by default): its time
and its agreement.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from benchkit.agreement import agreement, to_input_size
from benchkit.cases import Case, check_wrapper, nonconstant_channels
from benchkit.cuda_plan import Deadline, Part, Plan, load_case, log, run_cases, tf32_off
from benchkit.ours import available_backends, case_backends, run_ours
from benchkit.peers import PEERS, RUNNERS
from benchkit.timing import Tool, measure_all, timed

PEER_MODULES = {"grad-cam": "pytorch_grad_cam", "torchcam": "torchcam.methods"}
MIN_SECONDS_FOR_A_CASE = 20.0  # a case is not started with less of the budget left


def importable_peers() -> tuple[list[str], dict[str, str]]:
    """Peers that import here, and why each other one does not."""
    ok, missing = [], {}
    for name in PEERS:
        try:
            importlib.import_module(PEER_MODULES[name])
        except Exception as exc:  # any import failure: that peer is not timed
            missing[name] = f"{type(exc).__name__}: {exc}"
            continue
        ok.append(name)
    return ok, missing


def compare_case(case: Case, plan: Plan, peers: list[str]) -> dict[str, Any]:
    """Time ours per precision (torch backend) and each peer on ``case``; the case's JSON."""
    device = case.images.device
    log(f"== {case.name}: layer {case.layer_label}, class {case.target}")
    check_wrapper(case)
    k, k_varying = nonconstant_channels(case)
    backend = case_backends(case, ["torch"], None)[0]["torch"]

    def ours(precision: str) -> Tool:
        def run(bs: int) -> Any:
            return run_ours(case, bs, precision, backend)

        return Tool(f"ours[{precision}]", run, list(plan.ours_batch_sizes))

    def peer(name: str) -> Tool:
        def run(bs: int) -> Any:
            return RUNNERS[name](case, bs)

        return Tool(name, run, list(plan.peer_batch_sizes))

    ours_tools = {p: ours(p) for p in plan.precisions}
    peer_tools = {name: peer(name) for name in peers}
    for tool in ours_tools.values():  # every shape warm before any timing
        for bs in tool.batch_sizes:
            tool.run(bs)
    peer_errors = {}
    for name, tool in list(peer_tools.items()):  # a peer that fails is dropped, with its error
        try:
            for bs in tool.batch_sizes:
                tool.run(bs)
        except Exception as exc:
            peer_errors[name] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            log(f"  {name} failed, not timed: {peer_errors[name]}")
            del peer_tools[name]
    measure_all([*ours_tools.values(), *peer_tools.values()], plan.repeats, False, device)
    size = (case.size, case.size)
    fp32 = ours_tools["fp32"]
    reference = to_input_size(fp32.output.maps[0, 0], size)
    out: dict[str, Any] = {
        **case.record(k, k_varying),
        "ours": {},
        "peers": {},
        "peer_errors": peer_errors,
    }
    for precision, tool in ours_tools.items():
        result = tool.output
        out["ours"][precision] = {
            **tool.as_json(),
            "forward_passes": result.forward_passes,
            "channels_with_own_pass": int(result.image_passes[0]),
            "forward_passes_saved": result.forward_passes_saved,
            "agreement_vs_fp32": agreement(reference, to_input_size(result.maps[0, 0], size)),
        }
    out["ours"]["fp32_tf32_off"] = _fp32_without_tf32(case, fp32.batch_size, backend, reference)
    for name, tool in peer_tools.items():
        theirs = to_input_size(torch.as_tensor(tool.output), size)
        out["peers"][name] = {
            **tool.as_json(),
            "agreement_vs_ours_fp32": agreement(reference, theirs),
        }
        log(f"  {name} vs ours: {out['peers'][name]['agreement_vs_ours_fp32']}")
    fastest_peer = min((t.seconds for t in peer_tools.values()), default=float("nan"))
    out["speedup_vs_fastest_peer"] = {p: fastest_peer / t.seconds for p, t in ours_tools.items()}
    return out


def _fp32_without_tf32(case: Case, batch_size: int, backend: Any, reference: Any) -> dict:
    """Ours at fp32 with TF32 off, at fp32's best batch size: one warm-up, one timed run."""
    size = (case.size, case.size)
    with tf32_off():
        run_ours(case, batch_size, "fp32", backend)
        seconds, result = timed(
            lambda: run_ours(case, batch_size, "fp32", backend), case.images.device
        )
    log(f"    ours[fp32, TF32 off]: batch {batch_size}: {seconds:.3f} s")
    return {
        "batch_size": batch_size,
        "seconds": seconds,
        "forward_passes": result.forward_passes,
        "agreement_vs_fp32": agreement(reference, to_input_size(result.maps[0, 0], size)),
    }


def run(plan: Plan, part: Part, deadline: Deadline) -> None:
    peers, missing = importable_peers()
    for name, why in missing.items():
        log(f"  {name}: not importable, not timed ({why})")
    backends = available_backends(plan.device)
    part.save(cases=[], peers_missing=missing, backends_available=backends, skipped=[])

    def measure(name: str, size: int) -> dict[str, Any]:
        return compare_case(load_case(name, size, plan.device), plan, peers)

    run_cases(plan, part, deadline, MIN_SECONDS_FOR_A_CASE, measure)
