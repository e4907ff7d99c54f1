"""Does ``--keep-aspect`` keep two objects side by side apart? Accuracy only, no timing.

Three sample photos whose top-1 class the embedded EfficientNet-Lite0 is sure of (camera.png:
tripod 872, chelsea.png: Egyptian cat 285, coffee.png: espresso 967) are centre-cropped square,
resized to 224 x 224 and pasted side by side, in each of the 6 ordered pairs, into 224 x 448
pictures. ``scorecam run`` explains each picture for the classes of both halves (``-c``), once
squashed to 224 x 224 (today's default) and once with ``--keep-aspect`` (224 x 448). For each
class's map (the raw ``.npy`` at the picture's size, non-negative) the share of its energy on
that class's own half is measured: 0.5 is no separation, 1 all of it on the right half.

Usage: ``python benchmarks/keep_aspect.py [--method scorecam] [--json PATH]``; the table goes
to stdout, the CLI's progress to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = {"camera.png": 872, "chelsea.png": 285, "coffee.png": 967}
SIDE = 224


def square(path: Path) -> np.ndarray:
    """The photo's centre square at SIDE x SIDE, (SIDE, SIDE, 3) uint8 BGR."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    short = min(height, width)
    top, left = (height - short) // 2, (width - short) // 2
    crop = image[top : top + short, left : left + short]
    return np.asarray(cv2.resize(crop, (SIDE, SIDE), interpolation=cv2.INTER_AREA))


def make_pairs(folder: Path) -> dict[str, tuple[int, int]]:
    """Write the 6 side-by-side pictures; name -> (left class, right class)."""
    tiles = {name: square(ROOT / "sample_images" / name) for name in PHOTOS}
    pairs = {}
    for left, right in itertools.permutations(PHOTOS, 2):
        name = f"{Path(left).stem}+{Path(right).stem}.png"
        cv2.imwrite(str(folder / name), np.concatenate([tiles[left], tiles[right]], axis=1))
        pairs[name] = (PHOTOS[left], PHOTOS[right])
    return pairs


def own_half_shares(
    folder: Path, out: Path, method: str, keep_aspect: bool
) -> dict[str, dict[int, float]]:
    """Run the CLI on ``folder``; picture -> class -> share of its map's energy on its half."""
    classes = [arg for index in PHOTOS.values() for arg in ("-c", str(index))]
    command = [
        sys.executable, "-m", "scorecam_cli", "run", str(folder), "-o", str(out),
        "--method", method, "--workers", "0", *classes,
        *(["--keep-aspect"] if keep_aspect else []),
    ]  # fmt: skip
    print("$", " ".join(command[2:]), file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    shares: dict[str, dict[int, float]] = {}
    for path in sorted(out.glob("*.npy")):
        picture, class_part = path.name.split(".png.")
        shares.setdefault(picture + ".png", {})[int(class_part.split(".")[0][1:])] = float(
            _right_share(np.load(path))
        )
    return shares


def _right_share(cam: np.ndarray) -> float:
    """Share of the map's energy (H, W) on its right half (0.5 for an empty map)."""
    energy = np.clip(cam.astype(np.float64), 0, None)
    total = energy.sum()
    return float(energy[:, cam.shape[1] // 2 :].sum() / total) if total > 0 else 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="scorecam")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "pairs"
        folder.mkdir()
        pairs = make_pairs(folder)
        rows = []
        for keep in (False, True):
            shares = own_half_shares(folder, Path(work) / f"out-{keep}", args.method, keep)
            own = [
                right if side else 1.0 - right
                for name, (left, right_class) in pairs.items()
                for side, index in enumerate((left, right_class))
                for right in [shares[name][index]]
            ]
            rows.append({"keep_aspect": keep, "maps": len(own), "own_half": own})
    print("| input | maps | mean own-half energy share | min | maps with > 0.5 |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        own = np.asarray(row["own_half"])
        label = "--keep-aspect (224x448)" if row["keep_aspect"] else "squashed (224x224)"
        above = int((own > 0.5).sum())
        print(f"| {label} | {len(own)} | {own.mean():.3f} | {own.min():.3f} | {above} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"method": args.method, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
