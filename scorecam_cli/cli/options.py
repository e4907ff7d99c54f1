"""The option groups of ``run`` and ``eval``: model and layer, the Score-CAM core, decoding.
Each group reaches the command as the library's frozen specs. Click only; torch-free."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from scorecam_cli.backends import BACKENDS
from scorecam_cli.choices import HEADS, LAYOUTS, PRECISIONS, WEIGHTINGS
from scorecam_cli.cli.common import UsageFailure, option_group
from scorecam_cli.spec import CamConfig, ComputeSpec, LayerSpec, ModelSpec

MIN_SIDE, MAX_SIDE = 16, 4096  # --input-size: 4096 x 4096 is 200 MB per float32 image batch of 1
F = TypeVar("F", bound=Callable[..., Any])

METHOD_HELP = (
    "scorecam: exact Score-CAM (default). faster-scorecam: APPROXIMATE, only the --top-channels "
    "channels of highest activation variance. sscam: APPROXIMATE, noise-smoothed masks "
    "(--samples noisy copies). iscam: APPROXIMATE, integrated masks (--samples steps). "
    "gradcam, gradcam++, layercam: gradient baselines, one backward pass. Measured fidelity of "
    "each: README, Methods."
)


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """``N`` or ``HxW`` as (H, W), each side within MIN_SIDE..MAX_SIDE; one-line usage error."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(
        p.strip().isascii() and p.strip().isdigit() for p in parts
    ):
        raise UsageFailure(f"--input-size {text!r}: give N or HxW, e.g. 224 or 240x320")
    sides = [int(p) for p in parts]
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in sides):
        raise UsageFailure(
            f"--input-size {text}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels"
        )
    return (sides[0], sides[-1])


def parse_values(option: str, text: str | None) -> tuple[float, ...] | None:
    """``R,G,B`` or one value (a grayscale model's) as floats; one-line usage error."""
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise UsageFailure(f"{option} {text!r}: give R,G,B or one value, e.g. 0.485,0.456,0.406")
    return values


def _model_specs(
    model: str,
    weights: str,
    labels: str | None,
    mean: str | None,
    std: str | None,
    layer: str | None,
    input_size: str | None,
    layout: str | None,
    prefix_tokens: int | None,
) -> dict[str, Any]:
    return {
        "model": model_spec(model, weights, labels, mean, std),
        "layer": LayerSpec(layer, layout, prefix_tokens),
        "input_size": parse_input_size(input_size),
    }


def model_spec(
    model: str, weights: str, labels: str | None, mean: str | None, std: str | None
) -> ModelSpec:
    """The ModelSpec of --model, --weights, --labels, --mean and --std."""
    return ModelSpec(
        model, weights, labels, parse_values("--mean", mean), parse_values("--std", std)
    )


LABELS_OPTION = click.option(
    "--labels",
    default=None,
    metavar="FILE",
    help="Class names: one per line, or a .json list or {index: name} object; one name per "
    "class (a one-logit binary model: negative, positive). Default: the weights' own names.",
)
MEAN_OPTION = click.option(
    "--mean",
    default=None,
    metavar="R,G,B",
    help="Normalisation mean on [0, 1] pixels (one value: every channel, or a grayscale "
    "model's). Default: the model source's.",
)
STD_OPTION = click.option(
    "--std",
    default=None,
    metavar="R,G,B",
    help="Normalisation standard deviation, as --mean. Default: the model source's.",
)
KEEP_ASPECT_OPTION = click.option(
    "--keep-aspect",
    is_flag=True,
    help="Keep each image's aspect instead of squashing it to the square input size: the short "
    "side is resized to the input size, the long side follows, rounded to the layer's stride "
    "and capped at 2x the short side. Batches hold one size. CNNs only: a model that takes "
    "one size (ViT, timm Swin, an ONNX file) is refused; the masked passes run in PyTorch.",
)
HEAD_OPTION = click.option(
    "--head",
    type=click.Choice(HEADS),
    default=None,
    help="How logits become probabilities: softmax across classes, or sigmoid of each class's "
    "own logit (multi-label; a one-logit model is binary: class 1 positive, 0 negative). "
    "Default: sigmoid for a model with one output, else softmax.",
)


model_options = option_group(
    _model_specs,
    [
        click.option(
            "-m",
            "--model",
            default="efficientnet_lite0",
            show_default=True,
            help="A torchvision classification model, the embedded efficientnet_lite0, "
            "timm:NAME (extra 'timm'), package.module:NAME: a function or nn.Module class "
            "defined in that module, called without arguments, that gives an nn.Module (nothing "
            "else is ever called), a model folder with its class names and preprocessing: DIR "
            "or hf:DIR (Hugging Face save_pretrained; extra 'hf'), timm:DIR (timm save_for_hf), "
            "or an ONNX file: FILE.onnx or onnx:FILE (run in ONNX Runtime, Score-CAM methods "
            "only; extra 'fast').",
        ),
        click.option(
            "-w",
            "--weights",
            default="DEFAULT",
            show_default=True,
            help="DEFAULT, a torchvision weights name (e.g. IMAGENET1K_V2), none (random init) "
            "or a checkpoint file (.pth/.pt/.ckpt/.bin or .safetensors; a registry model is "
            "built to fit its head and stem). Named weights are read from the torch hub cache "
            "(timm: the Hugging Face cache); a model folder's DEFAULT is its own weights.",
        ),
        LABELS_OPTION,
        MEAN_OPTION,
        STD_OPTION,
        click.option(
            "-l",
            "--layer",
            default=None,
            help="Target layer: a dotted module name (layer4, features.29), with :CALL for a "
            "module that runs more than once (an ONNX file: a tensor name). Default: the last "
            "block output of the backbone before global pooling (ViT: the last block's ln_1); "
            "see 'scorecam layers MODEL'.",
        ),
        click.option(
            "--input-size",
            default=None,
            metavar="N|HxW",
            help=f"Resize images to N x N or H x W ({MIN_SIDE} to {MAX_SIDE} pixels a side). "
            "Default: the model's native size.",
        ),
        click.option(
            "--layout",
            type=click.Choice(LAYOUTS),
            default=None,
            help="How to read --layer's output as maps: nchw (N, C, h, w), nhwc (N, h, w, C) or "
            "tokens (N, P + h*w, C). Default: decided from the model.",
        ),
        click.option(
            "--prefix-tokens",
            type=click.IntRange(0),
            default=None,
            help="Tokens before the patch tokens (class, distillation, register). Default: the "
            "model's own (torchvision ViT: 1; timm: num_prefix_tokens).",
        ),
    ],
)
"""--model, --weights, --labels, --mean, --std, --layer, --input-size, --layout,
--prefix-tokens -> the arguments ``model`` (ModelSpec), ``layer`` (LayerSpec) and ``input_size``
((H, W) or None)."""


def workers_option(function: F) -> F:
    """``--workers``: decoding processes, default by :func:`decode_workers`."""
    return click.option(
        "--workers",
        type=click.IntRange(0),
        default=None,
        help="Decoding processes [default: 1; 0, decoding here, for at most one --image-batch "
        "of files named on the command line].",
    )(function)


def decode_workers(workers: int | None, inputs: Sequence[str], image_batch: int) -> int:
    """``--workers``, else 0 for at most one batch of named files (a decode process has nothing
    to overlap with then, and forking it cost a one-image run 0.25 s on 2 cores), else 1."""
    if workers is not None:
        return workers
    named_files = all(spec != "-" and os.path.isfile(spec) for spec in inputs)
    return 0 if named_files and len(inputs) <= image_batch else 1


def _cam_specs(
    head: str | None,
    weighting: str,
    batch_size: int | None,
    device: str,
    precision: str,
    top_channels: int,
    samples: int,
    no_sharing: bool,
    backend: str,
    threads: int | None,
) -> dict[str, Any]:
    config = CamConfig(
        head=head or "auto",
        weighting=weighting,
        batch_size=batch_size,
        precision=precision,
        share_masks=not no_sharing,
        top_channels=top_channels,
        samples=samples,
    )
    return {"cam": config, "compute": ComputeSpec(device, backend, threads)}


cam_options = option_group(
    _cam_specs,
    [
        HEAD_OPTION,
        click.option(
            "--weighting",
            type=click.Choice(WEIGHTINGS),
            default="softmax",
            show_default=True,
            help="softmax: channel weights are the softmax over channels of the masked inputs' "
            "class logits (the paper's Algorithm 1; pytorch-grad-cam and torchcam). prob: each "
            "masked input's class probability, the --head's (the authors' released code).",
        ),
        click.option(
            "-b",
            "--batch-size",
            type=click.IntRange(1),
            default=None,
            help="Masked images per forward pass. Default: measured per device (CPU 4, CUDA 128).",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto (CUDA when present), cpu, cuda or cuda:N.",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default="fp32",
            show_default=True,
            help="Autocast precision of the forward passes (fp16/bf16 for CUDA).",
        ),
        click.option(
            "--top-channels",
            type=click.IntRange(1),
            default=256,
            show_default=True,
            help="faster-scorecam: channels kept per image.",
        ),
        click.option(
            "--samples",
            type=click.IntRange(1),
            default=8,
            show_default=True,
            help="sscam: noisy copies per mask; iscam: integration steps.",
        ),
        click.option(
            "--no-sharing",
            is_flag=True,
            help="Score every channel's masked input, even identical ones (slower, same maps).",
        ),
        click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default="auto",
            show_default=True,
            help="What runs the masked passes (the first pass is always PyTorch): torch; "
            "onnxruntime or openvino on a copy exported once to ONNX and cached in "
            "$XDG_CACHE_HOME/scorecam (pip install 'scorecam-cli[fast]'; fp32 only). auto: "
            "onnxruntime, else openvino, else torch on the CPU; torch on CUDA and with "
            "--precision fp16/bf16. A model that cannot be exported runs in torch (one warning).",
        ),
        click.option(
            "--threads",
            type=click.IntRange(1),
            default=None,
            help="CPU compute threads of torch and the backend. Default: OMP_NUM_THREADS, "
            "else the cores.",
        ),
    ],
)
"""The Score-CAM core's options, shared by run and eval -> the arguments ``cam`` (CamConfig;
its method is the command's) and ``compute`` (ComputeSpec)."""
