"""What the ``scorecam`` commands share: one-line errors, option groups, model and layer loading,
the progress bar and the stdout/stderr writers. Click only; heavy imports happen inside functions.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scorecam_cli.choices import BACKENDS, LAYOUTS, PRECISIONS, SCORE_METHODS, WEIGHTINGS

if TYPE_CHECKING:
    import torch

    from scorecam_cli.explainer import Explainer
    from scorecam_cli.layers import LayerRef
    from scorecam_cli.models import LoadedModel
    from scorecam_cli.writing import Failure

log = logging.getLogger("scorecam_cli")
MIN_SIDE, MAX_SIDE = 16, 4096  # --input-size: 4096 x 4096 is 200 MB per float32 image batch of 1
F = TypeVar("F", bound=Callable[..., Any])

METHOD_HELP = (
    "scorecam: exact Score-CAM (default). faster-scorecam: APPROXIMATE, only the --top-channels "
    "channels of highest activation variance. sscam: APPROXIMATE, noise-smoothed masks "
    "(--samples noisy copies). iscam: APPROXIMATE, integrated masks (--samples steps). "
    "gradcam, gradcam++, layercam: gradient baselines, one backward pass. Measured fidelity of "
    "each: README, Methods."
)


class UsageFailure(click.ClickException):
    """A one-line error about what the user asked for (exit code 2)."""

    exit_code = 2


class Fatal(click.ClickException):
    """A one-line error that stops the run (exit code 1)."""

    exit_code = 1


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's one-line errors into Click exits: 2 for bad names, 1 otherwise."""
    from scorecam_cli.errors import (
        BadInputSize,
        ScoreCamError,
        UnknownLayer,
        UnknownModel,
        UnsupportedModel,
    )

    try:
        yield
    except (UnknownModel, UnknownLayer, BadInputSize, UnsupportedModel) as exc:
        raise UsageFailure(str(exc)) from None
    except (ScoreCamError, ValueError) as exc:
        raise Fatal(str(exc)) from None


def model_options(function: F) -> F:
    """--model, --weights, --layer and --input-size, shared by every command that loads a model."""
    options = [
        click.option(
            "-m",
            "--model",
            default="efficientnet_lite0",
            show_default=True,
            help="A torchvision classification model, the embedded efficientnet_lite0, "
            "timm:NAME (extra 'timm'), or package.module:NAME: a function or nn.Module class "
            "defined in that module, called without arguments, that gives an nn.Module (nothing "
            "else is ever called).",
        ),
        click.option(
            "-w",
            "--weights",
            default="DEFAULT",
            show_default=True,
            help="DEFAULT, a torchvision weights name (e.g. IMAGENET1K_V2), none (random init) "
            "or a state-dict file. Named weights are read from the torch hub cache (timm: the "
            "Hugging Face cache).",
        ),
        click.option(
            "-l",
            "--layer",
            default=None,
            help="Target layer: a dotted module name (layer4, features.29), with :CALL for a "
            "module that runs more than once. Default: the last block output of the backbone "
            "before global pooling (ViT: the last block's ln_1); see 'scorecam layers MODEL'.",
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
    ]
    for option in reversed(options):
        function = option(function)
    return function


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


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """``N`` or ``HxW`` as (H, W), each side within MIN_SIDE..MAX_SIDE; one-line usage error."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise UsageFailure(f"--input-size {text!r}: give N or HxW, e.g. 224 or 240x320")
    sides = [int(p) for p in parts]
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in sides):
        raise UsageFailure(
            f"--input-size {text}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels"
        )
    return (sides[0], sides[-1])


@contextmanager
def native_size_hint(loaded: LoadedModel) -> Iterator[None]:
    """Add the model's native size to a failed dry run's one-line error (exit 2)."""
    from scorecam_cli.errors import BadInputSize

    try:
        yield
    except BadInputSize as exc:
        height, width = loaded.preprocessing.input_size
        raise UsageFailure(f"{loaded.name}: {exc} (native size: {height}x{width})") from None


def load_explained_model(
    model: str,
    weights: str,
    layer: str | None,
    input_size: str | None,
    layout: str | None = None,
    prefix_tokens: int | None = None,
) -> tuple[LoadedModel, LayerRef, tuple[int, int], int | None]:
    """Load the model and resolve the layer by a dry run at the input size (the model's native
    size by default); the layer and its layout are logged. Also returns the number of classes
    C of the model's (1, C) output in that dry run (None for any other output)."""
    from scorecam_cli.layers import resolve_layer
    from scorecam_cli.models import load_model

    asked = parse_input_size(input_size)
    with user_errors():
        loaded = load_model(model, weights)
        size = asked or loaded.preprocessing.input_size
        with native_size_hint(loaded), _output_width(loaded.module) as width:
            info = resolve_layer(loaded.module, layer, size, layout, prefix_tokens)
    how = "default" if layer is None else "chosen"
    log.info("layer %s (%s), %s, %s", info.ref, how, info.layout, shape_text(info.map_shape))
    return loaded, info.ref, size, (width[-1] if width else None)


@contextmanager
def _output_width(module: Any) -> Iterator[list[int]]:
    """Notes C of each (1, C) output of ``module`` meanwhile (a forward hook), so that --class
    and --top-k are checked on the dry run's logits instead of another forward pass."""
    import torch

    widths: list[int] = []

    def note(_module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 2:
            widths.append(int(output.shape[1]))

    handle = module.register_forward_hook(note)
    try:
        yield widths
    finally:
        handle.remove()


def shape_text(shape: tuple[int, ...] | None) -> str:
    """A map's (C, h, w) as ``CxHxW``; empty for None."""
    return "x".join(str(v) for v in shape) if shape else ""


def cam_options(function: F) -> F:
    """The Score-CAM core's options, shared by run and eval."""
    options = [
        click.option(
            "--weighting",
            type=click.Choice(WEIGHTINGS),
            default="softmax",
            show_default=True,
            help="softmax: channel weights are the softmax over channels of the masked inputs' "
            "class logits (the paper's Algorithm 1; pytorch-grad-cam and torchcam). prob: each "
            "masked input's class probability (the authors' released code).",
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
    ]
    for option in reversed(options):
        function = option(function)
    return function


def make_config(method: str, **opts: Any) -> Any:
    from scorecam_cli.cam import CamConfig

    return CamConfig(
        method=method,
        weighting=opts["weighting"],
        batch_size=opts["batch_size"],
        precision=opts["precision"],
        share_masks=not opts["no_sharing"],
        top_channels=opts["top_channels"],
        samples=opts["samples"],
    )


def make_explainer(
    model: str,
    weights: str,
    layer: str | None,
    input_size: str | None,
    method: str,
    class_names: tuple[str, ...],
    top_k: int,
    opts: dict[str, Any],
    uses_masked_passes: bool | None = None,
    check_precision: bool = True,
) -> Explainer:
    """Everything `run` and `eval` need to explain a batch, from the command-line options.

    The backend is loaded when the method (or ``uses_masked_passes``) has masked passes; its
    default batch size is the config's when none was given.
    """
    from scorecam_cli.backends import load_backend
    from scorecam_cli.devices import prepare_model
    from scorecam_cli.explainer import Explainer
    from scorecam_cli.models import parse_class

    if class_names and top_k != 1:
        raise click.UsageError("give either --class or --top-k, not both")
    device = check_device(opts["device"])
    loaded, ref, size, class_count = load_explained_model(
        model, weights, layer, input_size, opts.get("layout"), opts.get("prefix_tokens")
    )
    with user_errors():
        classes = [parse_class(text, loaded.categories) for text in class_names] or None
        loaded.module = prepare_model(loaded.module, device)
        masked = method in SCORE_METHODS if uses_masked_passes is None else uses_masked_passes
        backend = load_backend(
            loaded.module,
            opts["backend"] if masked else "torch",
            model_name=loaded.name,
            input_size=size,
            device=device,
            precision=opts["precision"],
            threads=opts["threads"],
        )
        config = make_config(
            method, **{**opts, "batch_size": opts["batch_size"] or backend.batch_size}
        )
    if check_precision and backend.name == "torch":  # the other backends judge their own
        check_cpu_precision(device, opts["precision"])
    check_classes(class_count, classes, top_k)
    log.debug(
        "model %s (%s) on %s, masked passes: %s", loaded.name, loaded.weights, device, backend.name
    )
    return Explainer(loaded, ref, device, config, classes, top_k, size, backend.score_batch)


def check_device(spec: str) -> torch.device:
    """The device ``spec`` names (``auto``: CUDA when present, else the CPU); a usage error for a
    device torch cannot name or we cannot compute on."""
    import torch

    allowed = "auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device("cpu" if spec == "auto" else spec)
    except (RuntimeError, ValueError):
        raise UsageFailure(f"--device {spec!r} is not a device; use {allowed}") from None
    if spec == "auto" and torch.cuda.is_available():
        device = torch.device("cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA GPU"
            raise UsageFailure(f"--device {spec}: torch sees {found}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageFailure(f"--device {spec}: MPS (Apple GPU) is not available here")
    elif device.type != "cpu":
        raise UsageFailure(f"--device {spec}: cannot compute maps on {device.type}; use {allowed}")
    return device


def check_cpu_precision(device: Any, precision: str) -> None:
    """A usage error for fp16 autocast on the CPU (emulated: several times slower than fp32);
    bf16 on the CPU gets a warning."""
    if device.type == "cpu" and precision == "fp16":
        raise UsageFailure(
            "--precision fp16 on the CPU is emulated, about 6x slower than fp32 and less exact; "
            "use fp32 (fp16 is for CUDA)"
        )
    if device.type == "cpu" and precision == "bf16":
        log.warning(
            "warning: --precision bf16 on the CPU is fast only on CPUs with bf16 instructions "
            "(AVX512-BF16, AMX), and less exact than fp32"
        )


def check_classes(count: int | None, classes: list[int] | None, top_k: int) -> None:
    """A usage error for a class index or a top-k past the model's ``count`` outputs (from the
    dry run, so models without class names are checked too); None: not (1, C) logits, judged
    where they are used."""
    if count is None:
        return
    for index in classes or []:
        if index >= count:
            raise UsageFailure(f"--class {index} is out of range: the model has {count} classes")
    if not classes and top_k > count:
        raise UsageFailure(f"--top-k {top_k} is more than the model's {count} classes")


def report_failure(failure: Failure) -> None:
    """One line on stderr naming the file and the reason."""
    reason = failure.reason
    text = reason if reason.startswith(failure.input) else f"{failure.input}: {reason}"
    click.echo(f"scorecam: error: {text}", err=True)


@contextmanager
def progress() -> Iterator[Any]:
    """A tqdm bar of images on stderr; off with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    quiet = log.getEffectiveLevel() > logging.INFO
    bar = tqdm(unit="img", file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        yield bar
    finally:
        bar.close()


class StdoutClosed(Exception):
    """The reader of stdout went away (``| head -1``): the run ends quietly with exit 141.

    Not an OSError, so that Click does not turn it into exit 1."""


def emit(line: str, end: str = "\n") -> None:
    """Write one record to stdout and flush it, so a pipe sees each record at once.

    ``line`` may hold surrogate escapes (file names that are not UTF-8): they go out as the
    original bytes, as ``find -print0`` would print them.
    """
    data = (line + end).encode("utf-8", "surrogateescape")
    try:
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:
            sys.stdout.write(data.decode("utf-8", "replace"))
        else:
            sys.stdout.flush()
            stream.write(data)
            stream.flush()
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed() from None
