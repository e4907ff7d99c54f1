"""A synthetic run folder for report tests and the load benchmark: tiny PNGs and a manifest
written directly, no model run. Maps: ``inputs`` images x ``classes`` x ``methods``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from scorecam_cli.manifest import MANIFEST_NAME, ManifestWriter

METHODS = ("scorecam", "gradcam")


def class_name(index: int) -> str:
    return f"class{index:03d}"


def write_synthetic_run(
    root: Path, inputs: int, classes: int = 2, methods: tuple[str, ...] = METHODS, side: int = 16
) -> int:
    """Write ``root/in/imgNNNNN.png`` and their maps under ``root/out``; returns the map count.

    Image n explains classes (n + j) % 50 for j < ``classes``, so each class name matches a
    fiftieth of the inputs.
    """
    rng = np.random.default_rng(0)
    images, out = root / "in", root / "out"
    images.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", pixels)
    assert ok
    maps = 0
    with ManifestWriter(out / MANIFEST_NAME) as manifest:
        for n in range(inputs):
            name = f"img{n:05d}.png"
            (images / name).write_bytes(png.tobytes())
            for j in range(classes):
                index = (n + j) % 50
                for method in methods:
                    suffix = "" if method == "scorecam" else f".{method}"
                    base = f"{name}.c{index}{suffix}"
                    (out / f"{base}.overlay.png").write_bytes(png.tobytes())
                    np.save(out / f"{base}.npy", np.zeros((side, side), np.float32))
                    manifest.append(
                        {
                            "input": str(images / name),
                            "input_abspath": str((images / name).resolve()),
                            "overlay": f"{base}.overlay.png",
                            "npy": f"{base}.npy",
                            "heatmap": None,
                            "class_index": index,
                            "class_name": class_name(index),
                            "probability": round(float(rng.random()), 6),
                            "model": "synthetic",
                            "layer": "layer4",
                            "method": method,
                            "forward_passes": 100,
                            "forward_passes_saved": 10,
                            "original_size": [side, side],
                            "options": {},
                        }
                    )
                    maps += 1
    return maps
