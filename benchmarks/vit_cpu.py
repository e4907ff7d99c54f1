"""Exact Score-CAM seconds per image of torchvision's vit_b_16 (random init) at 224 on the CPU.

Run it alone on the machine (`make bench-vit`): the layer is the default by rule, the last
encoder block's ln_1 read as 14 x 14 tokens (768 channels, so up to 768 masked forward passes
per image). Prints one JSON line per backend to stdout: seconds per image (median of --repeats;
the export, cached on disk, is done before timing), passes run, threads, torch version; progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from scorecam_cli.backends import load_backend
from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.layers import resolve_layer
from scorecam_cli.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b_16")
    parser.add_argument("--input-size", type=int, default=None, help="Default: native (224).")
    parser.add_argument("--images", type=int, default=1, help="Images per compute_cams call.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="Masked images per pass.")
    parser.add_argument("--backends", default="torch,auto", help="Comma list of --backend values.")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(args.model, "none")
    module = loaded.module.eval()
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim > 1 and not param.any():  # torchvision zero-initialises ViT's head
                param.normal_(0, 0.02)
    size = (args.input_size,) * 2 if args.input_size else loaded.preprocessing.input_size
    info = resolve_layer(module, None, size)
    print(
        f"{args.model} at {size}: layer {info.ref} {info.layout} {info.map_shape}", file=sys.stderr
    )
    images = torch.randn(args.images, 3, *size, generator=torch.Generator().manual_seed(1))
    for name in args.backends.split(","):
        backend = load_backend(
            module,
            name,
            model_name=args.model,
            input_size=size,
            device=torch.device("cpu"),
            precision="fp32",
            threads=None,
        )
        config = CamConfig(batch_size=args.batch_size or backend.batch_size)
        seconds, passes = [], 0
        for repeat in range(args.repeats):
            start = time.perf_counter()
            result = compute_cams(
                module, info.ref, images, config=config, score_batch=backend.score_batch
            )
            seconds.append((time.perf_counter() - start) / args.images)
            passes = result.forward_passes
            done = f"{seconds[-1]:.2f} s/image"
            print(f"  {backend.name} repeat {repeat + 1}: {done}", file=sys.stderr)
        record = {
            "model": args.model,
            "input_size": list(size),
            "layer": str(info.ref),
            "backend": backend.name,
            "batch_size": config.batch_size,
            "seconds_per_image": statistics.median(seconds),
            "all_seconds_per_image": seconds,
            "forward_passes": passes,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
