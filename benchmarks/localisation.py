"""Do the maps point at the object? Every method, four model families trained from scratch.

The task is tests/synthetic.py's: 64 x 64 scenes holding two objects of distinct classes (of four)
with known boxes, multi-hot targets. A CNN, a ViT, a Swin and a ConvNeXt (torchvision's classes,
tiny settings) are trained from scratch, seeded, and cached by their settings under
``--cache`` (``--retrain`` ignores the cache). Then every method of the tool explains both
present classes of ``--scenes`` held-out scenes at each family's default layer (the rule of
``scorecam_cli.layers.resolve_layer``) and at one or two other layers, through the library
(``compute_cams``), and each class's map is scored against its own object's box with
``scorecam_cli.localisation``: the pointing game (the maximum inside the box; also with
``--tolerance`` pixels), the energy-based pointing game and the box area share (the chance level),
and the same two against the *other* object's box (a map that points there confuses the classes).

Writes ``--json`` (default benchmarks/results/localisation.json: per family x layer x method,
overall and per class), one picture row per family under ``--pictures`` (the input with its boxes,
then each method's overlay for each class, its box outlined) and the README's table on stdout;
progress goes to stderr. Usage: ``python benchmarks/localisation.py`` (``make
bench-localisation``); a few minutes on 2 CPU cores, most of it training (once, then cached).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from benchkit.report import cpu_info, versions
from torch import Tensor, nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from synthetic import CLASS_NAMES, FAMILIES, Scenes, SyntheticTask, train  # noqa: E402

from scorecam_cli import render  # noqa: E402
from scorecam_cli.cam import CamConfig, compute_cams, upsample_maps  # noqa: E402
from scorecam_cli.choices import METHODS  # noqa: E402
from scorecam_cli.layers import LayerInfo, resolve_layer  # noqa: E402
from scorecam_cli.localisation import box_mask, localisation_scores  # noqa: E402

# Layers beside each family's default: an earlier stage, and for the ViT the encoder's final norm
# (its patch tokens never reach the head: the gradient methods' known weak spot).
OTHER_LAYERS = {
    "cnn": ("features.6",),
    "vit": ("encoder.ln", "encoder.layers.encoder_layer_1.ln_1"),
    "swin": ("features.1",),
    "convnext": ("features.1",),
}
# Each family's share of a first run's time (training and maps), ranked: the costliest start first.
COST = {"swin": 4, "vit": 3, "convnext": 2, "cnn": 1}
EVAL_SEED = -1000  # held-out scenes: training draws seeds >= 0, its accuracy check -1 - seed
TILE = 96  # picture tile side, pixels
HEADER = 16  # picture header height, pixels
GAP = 2  # white pixels between a picture's lines


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {
        "task": asdict(SyntheticTask()) | {"classes": list(CLASS_NAMES), "scenes": args.scenes},
        "seed": args.seed,
        "tolerance": args.tolerance,
        "cam_config": cam_settings(args),
        "workers": args.workers,
        "threads_per_worker": threads_per_worker(args.workers),
        "cpu": cpu_info(),
        "versions": versions(),
        "command": " ".join(sys.argv),
    }
    start = time.perf_counter()
    # One process per family, one or more threads each: on 2 cores two single-thread processes
    # beat one two-thread process at these small ops. "spawn": the parent's OpenMP pool is not
    # inherited by a fork.
    context = multiprocessing.get_context("spawn")
    costliest_first = sorted(args.families, key=lambda name: -COST[name])
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        runs = pool.map(run_family, costliest_first, [args] * len(args.families))
        done = dict(zip(costliest_first, runs, strict=True))
    results["families"] = {name: done[name] for name in args.families}
    results["seconds"] = round(time.perf_counter() - start, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    render.write_atomic(args.json, (json.dumps(results, indent=1) + "\n").encode())
    log(f"wrote {args.json} after {results['seconds']} s")
    print_table(results, args.methods)


def run_family(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load) family ``name``, explain the held-out scenes at each of its layers with
    every method, score the maps, and draw its picture row."""
    start = time.perf_counter()
    torch.set_num_threads(threads_per_worker(args.workers))
    task = SyntheticTask()
    scenes = task.scenes(args.scenes, seed=EVAL_SEED - args.seed)
    model, training = trained_model(name, task, args.seed, args.cache, args.retrain)
    size = (task.size, task.size)
    layers = [resolve_layer(model, None, size)]
    layers += [resolve_layer(model, spec, size) for spec in OTHER_LAYERS[name]]
    family: dict[str, Any] = {"training": training, "layers": {}}
    pictured: dict[str, Tensor] = {}
    for index, info in enumerate(layers):
        entry: dict[str, Any] = {
            "default": index == 0,
            "layout": info.layout.kind if info.layout else None,
            "map": list(info.map_shape or ()),
            "methods": {},
        }
        for method in args.methods:
            config = CamConfig(method=method, seed=args.seed, **cam_settings(args))
            maps = explain(model, info, scenes, config)  # (N, O, S, S)
            entry["methods"][method] = score(maps, scenes, args.tolerance)
            if index == 0:
                pictured[method] = maps[args.picture_scene]
            log(f"{name} {info.ref} {method}: {brief(entry['methods'][method])}")
        family["layers"][str(info.ref)] = entry
    if args.pictures is not None:
        path = args.pictures / f"localisation-{name}.png"
        write_small_png(path, picture_row(name, scenes, args.picture_scene, pictured))
        log(f"{name}: wrote {path}")
    family["seconds"] = round(time.perf_counter() - start, 1)
    return family


def cam_settings(args: argparse.Namespace) -> dict[str, int]:
    return {
        "top_channels": args.top_channels,
        "samples": args.samples,
        "batch_size": args.batch_size,
    }


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), type=lambda s: s.split(","))
    parser.add_argument("--methods", default=",".join(METHODS), type=lambda s: s.split(","))
    parser.add_argument("--scenes", type=int, default=32, help="Held-out scenes explained.")
    parser.add_argument("--seed", type=int, default=0, help="Training and scene seed.")
    parser.add_argument(
        "--tolerance", type=float, default=4, help="Pointing-game tolerance, px (15 at 224)."
    )
    parser.add_argument("--top-channels", type=int, default=16, help="faster-scorecam's channels.")
    parser.add_argument("--samples", type=int, default=4, help="sscam / iscam samples.")
    parser.add_argument("--batch-size", type=int, default=64, help="Masked images per pass.")
    parser.add_argument("--picture-scene", type=int, default=0, help="The scene pictured.")
    parser.add_argument(
        "--cache",
        type=Path,
        default=REPO / "benchmarks" / "results" / "cache",
        help="Trained weights, by settings; 'none' to retrain without saving.",
    )
    parser.add_argument("--retrain", action="store_true", help="Ignore cached weights.")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="Families at a time."
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "localisation.json"
    )
    parser.add_argument("--pictures", type=Path, default=REPO / "docs", help="'none': no PNGs.")
    args = parser.parse_args()
    for name in args.families:
        if name not in FAMILIES:
            parser.error(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    for method in args.methods:
        if method not in METHODS:
            parser.error(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if args.workers < 1 or args.scenes < 1:
        parser.error("--workers and --scenes must be at least 1")
    if not 0 <= args.picture_scene < args.scenes:
        parser.error("--picture-scene must be one of the scenes")
    args.cache = None if str(args.cache) == "none" else args.cache
    args.pictures = None if str(args.pictures) == "none" else args.pictures
    return args


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- Models ---------------------------------------------------------------------------------------


def trained_model(
    name: str, task: SyntheticTask, seed: int, cache: Path | None, retrain: bool
) -> tuple[nn.Module, dict[str, Any]]:
    """Family ``name`` trained with its settings: from ``cache`` when it holds them, else now."""
    family = FAMILIES[name]
    settings = {
        "family": name,
        "steps": family.steps,
        "lr": family.lr,
        "seed": seed,
        "task": asdict(task),
        "torch": torch.__version__.split("+")[0],
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    weights = None if cache is None else cache / f"{name}-seed{seed}-{digest}.pt"
    torch.manual_seed(seed)
    model = family.build(task.classes, task.size)
    if weights is not None and weights.exists() and not retrain:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        info = json.loads(weights.with_suffix(".json").read_text())
        log(f"{name}: cached weights {weights.name}")
        return model.eval(), info | {"cached": True}
    log(f"{name}: training {family.steps} steps")
    start = time.perf_counter()
    outcome = train(model, task, family.steps, lr=family.lr, seed=seed)
    info = settings | asdict(outcome) | {"seconds": round(time.perf_counter() - start, 1)}
    log(f"{name}: loss {outcome.loss:.4f}, held-out accuracy {outcome.accuracy:.4f}")
    if weights is not None:
        weights.parent.mkdir(parents=True, exist_ok=True)
        partial = weights.with_suffix(f".{os.getpid()}.tmp")
        torch.save(model.state_dict(), partial)
        os.replace(partial, weights)
        render.write_atomic(weights.with_suffix(".json"), json.dumps(info).encode())
    return model, info | {"cached": False}


# -- Maps and scores ------------------------------------------------------------------------------


def explain(model: nn.Module, info: LayerInfo, scenes: Scenes, config: CamConfig) -> Tensor:
    """Maps (N, O, S, S) of each scene's present classes, in the order of ``scenes.labels``."""
    result = compute_cams(model, info.ref, scenes.inputs, scenes.labels, config=config)
    size = (int(scenes.pixels.shape[-2]), int(scenes.pixels.shape[-1]))
    return upsample_maps(result.maps, size)


def score(maps: Tensor, scenes: Scenes, tolerance: float) -> dict[str, Any]:
    """Each map against its own object's box and against the other objects' boxes, overall and
    per class (means over maps)."""
    n, objects, height, width = maps.shape
    own = torch.stack([box_masks(scenes.boxes[i], (height, width)) for i in range(n)])
    rest = [[j for j in range(objects) if j != k] for k in range(objects)]
    others = torch.stack([own[:, r].any(dim=1) for r in rest], dim=1)  # (N, O, H, W)
    cams = maps.flatten(0, 1)  # (N*O, H, W)
    on_own = localisation_scores(cams, own.flatten(0, 1), tolerance=0)
    near_own = localisation_scores(cams, own.flatten(0, 1), tolerance=tolerance)
    on_other = localisation_scores(cams, others.flatten(0, 1), tolerance=0)
    classes = scenes.labels.flatten()  # (N*O,)

    def means(keep: Tensor) -> dict[str, float]:
        return {
            "pointing_game": mean(on_own.hits, keep),
            "pointing_game_tolerance": mean(near_own.hits, keep),
            "energy_pointing_game": mean(on_own.energy, keep),
            "box_area_share": mean(on_own.area, keep),
            "pointing_game_other": mean(on_other.hits, keep),
            "energy_other": mean(on_other.energy, keep),
            "maps": int(keep.sum()),
        }

    every = torch.ones_like(classes, dtype=torch.bool)
    return means(every) | {
        "per_class": {name: means(classes == c) for c, name in enumerate(CLASS_NAMES)}
    }


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """(O, H, W) bool: one mask per object box of (O, 4)."""
    return torch.stack([box_mask(box[None], size) for box in boxes])


def mean(values: Tensor, keep: Tensor) -> float:
    return round(float(values[keep].double().mean()), 4) if bool(keep.any()) else float("nan")


def brief(entry: dict[str, Any]) -> str:
    return (
        f"pointing {entry['pointing_game']:.2f} (other object {entry['pointing_game_other']:.2f}),"
        f" energy {entry['energy_pointing_game']:.2f} (other {entry['energy_other']:.2f}),"
        f" chance {entry['box_area_share']:.3f}"
    )


# -- Pictures -------------------------------------------------------------------------------------


def picture_row(name: str, scenes: Scenes, index: int, maps: dict[str, Tensor]) -> np.ndarray:
    """(HEADER + (TILE + GAP) * O - GAP, TILE * (1 + methods), 3) BGR, a line per class: the input
    with that class's box outlined, then each method's overlay of that class's map."""
    scale = TILE / scenes.pixels.shape[-1]
    rgb = cv2.resize(scenes.rgb8(index).numpy(), (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    boxes = [[round(float(v) * scale) for v in box] for box in scenes.boxes[index]]
    lines = []
    for k, label in enumerate(scenes.labels[index].tolist()):
        tiles = [with_box(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), boxes[k], CLASS_NAMES[label])]
        for cams in maps.values():  # (O, S, S) per method
            cam = render.normalise(render.resize_map(cams[k].numpy(), (TILE, TILE)))
            tiles.append(with_box(render.overlay(rgb, render.heatmap(cam, "jet"), 0.5), boxes[k]))
        lines.append(np.concatenate(tiles, axis=1))
        lines.append(np.full((GAP, lines[-1].shape[1], 3), 255, dtype=np.uint8))
    header = np.full((HEADER, lines[0].shape[1], 3), 255, dtype=np.uint8)
    for i, title in enumerate([name, *maps]):
        write_text(header, title, (i * TILE + 3, HEADER - 5), (0, 0, 0))
    return np.concatenate([header, *lines[:-1]], axis=0)


def write_small_png(path: Path, image_bgr: np.ndarray) -> None:
    """The image as a 128-colour palette PNG (a quarter of the bytes: the scenes are noisy)."""
    from PIL import Image

    rgb = Image.fromarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    palette = rgb.quantize(colors=128, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    render.write_atomic(path, buffer.getvalue())


def with_box(image_bgr: np.ndarray, box: list[int], label: str | None = None) -> np.ndarray:
    """A copy of the tile with the box outlined in white (and a label at its foot)."""
    out = np.ascontiguousarray(image_bgr).copy()
    x0, y0, x1, y1 = box
    cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
    if label is not None:
        write_text(out, label, (3, TILE - 4), (255, 255, 255))
    return out


def write_text(
    image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, ...]
) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, text, origin, font, 0.35, colour, 1, cv2.LINE_AA)


# -- The table ------------------------------------------------------------------------------------


def print_table(results: dict[str, Any], methods: list[str]) -> None:
    """Markdown, one row per family and layer: per method, the pointing game (strict, and
    within the tolerance) and the energy share on the class's own box (%); then the same maps'
    pointing game and energy share on the other object's box (%)."""
    tolerance = f"{results['tolerance']:g}"
    own = ("pointing_game", "pointing_game_tolerance", "energy_pointing_game")
    other = ("pointing_game_other", "energy_other")
    for title, keys in ((f"own box: strict / within {tolerance} px / energy", own),
                        ("other object's box: strict / energy", other)):  # fmt: skip
        print(f"\n{title}\n")
        print("| family | layer | chance | " + " | ".join(methods) + " |")
        print("| --- | --- | --- | " + " | ".join("---" for _ in methods) + " |")
        for name, family in results["families"].items():
            for layer, entry in family["layers"].items():
                scores = [entry["methods"][method] for method in methods]
                cells = [" / ".join(f"{100 * m[key]:.0f}" for key in keys) for m in scores]
                chance = 100 * scores[0]["box_area_share"]
                shown = f"`{layer}`" + (" (default)" if entry["default"] else "")
                print(f"| {name} | {shown} | {chance:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
