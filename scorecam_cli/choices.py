"""The names the Score-CAM core accepts, torch-free: the CLI builds its options from them.
(Backends and engines have their own tables: scorecam_cli.backends, scorecam_cli.engines.)"""

from __future__ import annotations

SCORE_METHODS = ("scorecam", "faster-scorecam", "sscam", "iscam")
GRADIENT_METHODS = ("gradcam", "gradcam++", "layercam")
METHODS = SCORE_METHODS + GRADIENT_METHODS
WEIGHTINGS = ("softmax", "prob")
HEADS = ("softmax", "sigmoid")  # of scorecam_cli.heads; "auto" picks by the number of outputs
PRECISIONS = ("fp32", "fp16", "bf16")
NPY_SIZES = (
    "original",
    "input",
    "layer",
)  # the .npy map at the image's, model input's or layer's size
NPY_DTYPES = ("float32", "float16")
LAYOUTS = ("nchw", "nhwc", "tokens")  # of scorecam_cli.layouts
