"""The peers: pytorch-grad-cam's and torchcam's ScoreCAM, in this process or in a fresh one."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from benchkit.cases import Case, prepare_case

PEERS = ("grad-cam", "torchcam")


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


RUNNERS = {"grad-cam": run_gradcam, "torchcam": run_torchcam}


def peer_worker(args: argparse.Namespace) -> int:
    """A peer as a user runs it, in a fresh process: import it, load the embedded model, read
    the image, compute the map and save it (.npy). Prints its own seconds as JSON; the parent
    times the whole process."""
    from scorecam_cli.devices import resolve_device

    start = time.perf_counter()
    device = resolve_device(args.device)
    case = prepare_case("efficientnet_lite0", args.e2e_image, args.e2e_size, device, {})
    output: Any = RUNNERS[args.peer_worker](case, args.peer_worker_batch_size)
    np.save(args.peer_worker_output, np.asarray(torch.as_tensor(output).float().cpu()))
    print(json.dumps({"in_process_seconds": time.perf_counter() - start}))
    return 0
