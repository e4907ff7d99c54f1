"""The synthetic localisation task as files, for ``scorecam eval --boxes`` (the README's example).

Trains tests/synthetic.py's CNN from scratch (seeded, its own 300 steps: well under a minute on
two cores) and writes to OUT: ``cnn.pth`` (its state dict), ``labels.txt`` (the four class
names), ``scenes/scene<i>.png`` (held-out scenes, upscaled ``--scale`` times, so that the maps
must be brought to the images' own size) and ``boxes.csv`` (one row per object, by class name,
in the PNGs' pixels). This module's :func:`cnn` is the model factory to name on the command line::

    python benchmarks/boxes_task.py /tmp/boxes-task
    PYTHONPATH=benchmarks:tests scorecam eval /tmp/boxes-task/scenes --model boxes_task:cnn \\
        --weights /tmp/boxes-task/cnn.pth --labels /tmp/boxes-task/labels.txt \\
        --mean 0.5 --std 0.25 --input-size 64 --boxes /tmp/boxes-task/boxes.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from synthetic import CLASS_NAMES, SmallCnn, SyntheticTask, trained  # noqa: E402


def cnn() -> nn.Module:
    """The synthetic task's CNN, untrained: its weights come from ``--weights cnn.pth``."""
    return SmallCnn(len(CLASS_NAMES))


def write_task(out: Path, scenes: int, scale: int, seed: int) -> None:
    """Train the CNN and write its checkpoint, labels, scenes and boxes to ``out``."""
    task = SyntheticTask()
    model, training = trained("cnn", task, seed=seed)
    print(f"trained: loss {training.loss:.4f}, held-out accuracy {training.accuracy:.3f}",
          file=sys.stderr)  # fmt: skip
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "cnn.pth")
    (out / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    drawn = task.scenes(scenes, seed=10_000 + seed)
    rows = ["image,class,x0,y0,x1,y1"]
    for i in range(scenes):
        rgb = drawn.rgb8(i).numpy()  # (S, S, 3)
        big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(out / "scenes" / f"scene{i:02d}.png"), big[:, :, ::-1])
        for c, box in zip(drawn.labels[i].tolist(), drawn.boxes[i].tolist(), strict=True):
            corners = ",".join(f"{scale * v:g}" for v in box)
            rows.append(f"scene{i:02d}.png,{CLASS_NAMES[c]},{corners}")
    (out / "boxes.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="The folder to write.")
    parser.add_argument("--scenes", type=int, default=32, help="Held-out scenes written.")
    parser.add_argument("--scale", type=int, default=2, help="Upscaling of the PNGs.")
    parser.add_argument("--seed", type=int, default=0, help="Training and scene seed.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    write_task(args.out, args.scenes, args.scale, args.seed)


if __name__ == "__main__":
    main()
