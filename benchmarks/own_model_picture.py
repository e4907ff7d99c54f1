"""The README's picture of "your own model": docs/own-model-overlay.png.

Trains torchvision's resnet18 from scratch on tests/synthetic.py's one-object scenes (48 px, four
classes), as tests/test_trained_models.py does, saves it as a training script would
(``{"state_dict": ..., "epoch": 3}`` and a labels file), then explains one scene of each class
through the CLI with no factory code:

    scorecam run scenes/ --model resnet18 --weights classes.pth --labels classes.txt \\
        --input-size 48 --mean 0.5 --std 0.25 --layer layer1

The four overlays, side by side, are the picture. Run: ``python benchmarks/own_model_picture.py``
(about a minute on one core).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from synthetic import CLASS_NAMES, MEAN, SINGLE_LABEL, STD, SyntheticTask, train  # noqa: E402

TASK = SyntheticTask(size=48, objects=1, min_radius=4, max_radius=7)
SCALE = 4  # scenes are written 4x larger (nearest): the overlay is drawn on the picture as given
PICTURE = REPO / "docs" / "own-model-overlay.png"


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(CLASS_NAMES))
    training = train(model, TASK, 60, lr=3e-3, batch_size=16, seed=0, objective=SINGLE_LABEL)
    print(f"trained: {training}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        torch.save({"state_dict": model.state_dict(), "epoch": 3}, folder / "classes.pth")
        (folder / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
        scenes = TASK.scenes(32, seed=2024)
        firsts = [scenes.labels[:, 0].tolist().index(c) for c in range(len(CLASS_NAMES))]
        (folder / "scenes").mkdir()
        for c, index in enumerate(firsts):
            rgb = scenes.rgb8(index).numpy()
            big = cv2.resize(rgb, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(folder / "scenes" / f"{c}.png"), big[:, :, ::-1])
        command = [
            *("scorecam", "run", str(folder / "scenes"), "-o", str(folder / "out")),
            *("--model", "resnet18", "--weights", str(folder / "classes.pth")),
            *("--labels", str(folder / "classes.txt"), "--input-size", str(TASK.size)),
            *("--mean", str(MEAN), "--std", str(STD), "--layer", "layer1"),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(folder / "cache")}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        files = sorted((folder / "out").glob("*.overlay.png"))
        overlays: list[np.ndarray] = [np.asarray(cv2.imread(str(p)), np.uint8) for p in files]
    assert len(overlays) == len(CLASS_NAMES), len(overlays)
    gap = np.full((overlays[0].shape[0], 4, 3), 255, np.uint8)
    row = [part for overlay in overlays for part in (overlay, gap)][:-1]
    assert cv2.imwrite(str(PICTURE), np.hstack(row), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {PICTURE}", file=sys.stderr)


if __name__ == "__main__":
    main()
