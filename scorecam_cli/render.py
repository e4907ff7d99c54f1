"""Colour maps, overlays and atomic PNG / .npy writers (numpy and OpenCV only, no torch)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import cv2
import numpy as np

from scorecam_cli.errors import OutputWrite
from scorecam_cli.temp_files import temp_path

# OpenCV logs its own warnings and errors to stderr; we report failures ourselves, in one line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

_PREFIX = "COLORMAP_"

# Every colour map this OpenCV build has, by lower-case name without the prefix: jet, turbo, ...
COLORMAPS: dict[str, int] = {
    name[len(_PREFIX) :].lower(): int(getattr(cv2, name))
    for name in sorted(dir(cv2))
    if name.startswith(_PREFIX)
}


def colormap_id(name: str) -> int:
    """OpenCV's colour map id for ``name`` (case-insensitive); ValueError lists the valid names."""
    try:
        return COLORMAPS[name.lower()]
    except KeyError:
        valid = ", ".join(COLORMAPS)
        raise ValueError(f"unknown colormap {name!r}; choose one of: {valid}") from None


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float map -> (H, W) float32 for size=(H, W), bilinear with half-pixel centres.

    Matches torch's ``interpolate(mode="bilinear", align_corners=False)``. Not normalised.
    """
    if cam.ndim != 2:
        raise ValueError(f"expected a (h, w) map, got shape {cam.shape}")
    height, width = size
    resized = cv2.resize(
        cam.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def upsample_layer_map(cam: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """A map kept at the layer's size, (h, w) any float dtype -> (H, W) float32, for the image's
    ``original_size`` (H, W) as the manifest gives it (``--npy-size layer``).

    Bilinear with half-pixel centres and edge clamping: the same as torch's
    ``F.interpolate(mode="bilinear", align_corners=False)`` and as the maps the tool itself
    upsamples for ``--npy-size original`` (both use :func:`resize_map`).
    """
    return resize_map(np.asarray(cam, dtype=np.float32), original_size)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Any-shape map -> float32 min-max scaled to [0, 1].

    A constant map gives all zeros; NaN and infinite values are ignored for the range and become 0.
    """
    values = cam.astype(np.float32)
    finite = np.isfinite(values)
    out = np.zeros(values.shape, dtype=np.float32)
    if not finite.any():
        return out
    low, high = values[finite].min(), values[finite].max()
    if high - low > 0:
        out[finite] = (values[finite] - low) / (high - low)
    return np.clip(out, 0.0, 1.0)


def heatmap(cam01: np.ndarray, colormap: str) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) uint8 BGR colour image, using the named colour map."""
    if cam01.ndim != 2:
        raise ValueError(f"expected a (H, W) map, got shape {cam01.shape}")
    levels = np.round(np.clip(np.nan_to_num(cam01), 0.0, 1.0) * 255.0).astype(np.uint8)  # (H, W)
    return np.asarray(cv2.applyColorMap(levels, colormap_id(colormap)), dtype=np.uint8)


def overlay(image_rgb: np.ndarray, heat_bgr: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W, 3) uint8 RGB image + (H, W, 3) uint8 BGR heat -> (H, W, 3) uint8 BGR blend.

    Computes ``(1 - alpha) * image + alpha * heat``, rounded; alpha must be in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if image_rgb.shape != heat_bgr.shape or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(
            f"image and heat must both be (H, W, 3), got {image_rgb.shape} and {heat_bgr.shape}"
        )
    image_bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    blend = cv2.addWeighted(image_bgr, 1.0 - alpha, heat_bgr, alpha, 0.0)
    return np.asarray(blend, dtype=np.uint8)


def write_png(path: Path, image_bgr: np.ndarray) -> None:
    """Write a (H, W, 3) uint8 BGR (or (H, W) gray) image as PNG, atomically."""
    ok, encoded = cv2.imencode(".png", image_bgr)
    if not ok:
        raise OutputWrite(f"{path}: OpenCV could not encode the image as PNG")
    write_atomic(path, encoded.tobytes())


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write any array as a .npy file (no pickles), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_atomic(path, buffer.getbuffer())


def write_atomic(path: Path, data: bytes | memoryview, mtime_ns: int | None = None) -> None:
    """Write ``data`` to a hidden temp file beside ``path`` (named by
    :func:`scorecam_cli.temp_files.temp_path`), then rename it onto ``path``.

    Parent folders are created; ``mtime_ns``, when given, becomes the file's access and
    modification time (ns since the epoch). On any failure (KeyboardInterrupt included) the temp
    file is removed and ``path`` is left as it was; OSError becomes OutputWrite.
    """
    temp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temp, "xb") as file:
                file.write(data)
            if mtime_ns is not None:
                os.utime(temp, ns=(mtime_ns, mtime_ns))
            os.replace(temp, path)
        except BaseException as error:
            if not isinstance(error, FileExistsError):  # else the temp name is not ours
                with contextlib.suppress(OSError):
                    temp.unlink()
            raise
    except OSError as error:
        raise OutputWrite(f"{path}: {error.strerror or error}") from error
