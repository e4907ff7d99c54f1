"""What the ``.npy`` of a map holds: its size (``--npy-size``) and number type (``--npy-dtype``).

- ``original`` (default): the raw map at the image's own height x width.
- ``input``: at the model's input size (the square the image was resized to).
- ``layer``: at the target layer's size (e.g. 7x7), lossless: nothing was interpolated yet.
  :func:`scorecam_cli.render.upsample_layer_map` gives the original-size map back (bilinear,
  ``align_corners=False``, to the ``original_size`` the manifest records).

``float16`` halves the bytes and keeps about 3 significant digits; a map beyond float16's range
(above 65504) is refused, never written as infinity.
"""

from __future__ import annotations

import numpy as np

from scorecam_cli import render
from scorecam_cli.choices import NPY_DTYPES, NPY_SIZES


def stored_map(
    cam: np.ndarray,
    full: np.ndarray,
    input_size: tuple[int, int],
    npy_size: str = "original",
    npy_dtype: str = "float32",
) -> np.ndarray:
    """The array to save for one map: ``cam`` (h, w) at the layer's size, ``full`` (H0, W0) the
    same map at the original size -> (h, w), (H, W) = ``input_size`` or (H0, W0), of ``npy_dtype``.

    Raises ValueError for an unknown choice or a map float16 cannot hold.
    """
    if npy_size not in NPY_SIZES or npy_dtype not in NPY_DTYPES:
        raise ValueError(f"unknown npy size or dtype: {npy_size!r}, {npy_dtype!r}")
    if npy_size == "original":
        chosen = full
    elif npy_size == "input":
        chosen = render.resize_map(cam, input_size)
    else:
        chosen = cam
    with np.errstate(over="ignore"):  # checked below, with a one-line reason
        stored = np.asarray(chosen, dtype=np.dtype(npy_dtype))
    if not np.isfinite(stored).all() and np.isfinite(chosen).all():
        peak = float(np.abs(chosen).max())
        raise ValueError(
            f"map values up to {peak:.6g} exceed {npy_dtype}'s range; use --npy-dtype float32"
        )
    return stored
