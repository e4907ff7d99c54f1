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


def synthetic_images(side: int, photo: Path | None = None) -> tuple[bytes, bytes]:
    """PNG bytes of an input (``photo`` resized, else noise) and of its overlay (a jet blob)."""
    if photo is not None:
        decoded = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        assert decoded is not None, photo
        pixels = cv2.resize(decoded, (side, side), interpolation=cv2.INTER_AREA)
    else:
        pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    grid = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    blob = np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) * 3.0)  # (side, side) in (0, 1]
    heat = cv2.applyColorMap((blob * 255).astype(np.uint8), cv2.COLORMAP_JET)
    overlay = cv2.addWeighted(pixels, 0.5, heat, 0.5, 0.0)
    encoded = [cv2.imencode(".png", image) for image in (pixels, overlay)]
    assert all(ok for ok, _ in encoded)
    return encoded[0][1].tobytes(), encoded[1][1].tobytes()


def write_synthetic_run(
    root: Path,
    inputs: int,
    classes: int = 2,
    methods: tuple[str, ...] = METHODS,
    side: int = 16,
    photo: Path | None = None,
) -> int:
    """Write ``root/in/imgNNNNN.png`` and their maps under ``root/out``; returns the map count.

    Image n explains classes (n + j) % 50 for j < ``classes``, so each class name matches a
    fiftieth of the inputs. Every input is the same image (``photo`` resized, else noise).
    """
    rng = np.random.default_rng(0)
    images, out = root / "in", root / "out"
    images.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    png, overlay_png = synthetic_images(side, photo)
    maps = 0
    with ManifestWriter(out / MANIFEST_NAME) as manifest:
        for n in range(inputs):
            name = f"img{n:05d}.png"
            (images / name).write_bytes(png)
            for j in range(classes):
                index = (n + j) % 50
                for method in methods:
                    suffix = "" if method == "scorecam" else f".{method}"
                    base = f"{name}.c{index}{suffix}"
                    (out / f"{base}.overlay.png").write_bytes(overlay_png)
                    np.save(out / f"{base}.npy", np.zeros((side, side), np.float32))
                    manifest.append(
                        {
                            "input": f"in/{name}",  # as given, from a run in root
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
