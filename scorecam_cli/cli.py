"""The ``scorecam`` command: Click options, help text, record formatting and exit codes only.

stdout carries data (one record per line); progress, logs and errors go to stderr. Heavy imports
(torch, OpenCV) happen inside commands so ``scorecam --help`` is instant.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scorecam_cli import __version__
from scorecam_cli.choices import METHODS, PRECISIONS, WEIGHTINGS

if TYPE_CHECKING:
    from scorecam_cli.layers import LayerRef
    from scorecam_cli.models import LoadedModel
    from scorecam_cli.pipeline import Explainer, Failure, MapRecord

log = logging.getLogger("scorecam_cli")
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
    from scorecam_cli.errors import ScoreCamError, UnknownLayer, UnknownModel

    try:
        yield
    except (UnknownModel, UnknownLayer) as exc:
        raise UsageFailure(str(exc)) from None
    except (ScoreCamError, ValueError) as exc:
        raise Fatal(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scorecam")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr: no progress, no logs.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr.")
def main(quiet: bool, verbose: bool) -> None:
    """Score-CAM heatmaps for image classifiers.

    \b
    scorecam run sample_images/ -o heatmaps/     explain every image of a folder
    find . -name '*.jpg' | scorecam run - -o out explain a list of paths from stdin
    scorecam layers resnet50                     the layers you can explain
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scorecam: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def model_options(function: F) -> F:
    """--model, --weights, --layer and --input-size, shared by every command that loads a model."""
    options = [
        click.option(
            "-m",
            "--model",
            default="efficientnet_lite0",
            show_default=True,
            help="A torchvision classification model, the embedded efficientnet_lite0, or "
            "package.module:factory (a callable returning an nn.Module).",
        ),
        click.option(
            "-w",
            "--weights",
            default="DEFAULT",
            show_default=True,
            help="DEFAULT, a torchvision weights name (e.g. IMAGENET1K_V2), none (random init) "
            "or a state-dict file. Named weights are read from the torch hub cache.",
        ),
        click.option(
            "-l",
            "--layer",
            default=None,
            help="Target layer: a dotted module name (layer4, features.29), with :CALL for a "
            "module that runs more than once. Default: the last layer whose output is a map.",
        ),
        click.option(
            "--input-size",
            type=click.IntRange(16),
            default=None,
            help="Resize images to this square size. Default: the model's own.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def load_explained_model(
    model: str, weights: str, layer: str | None, input_size: int | None
) -> tuple[LoadedModel, LayerRef, tuple[int, int]]:
    """Load the model and resolve the layer (logged when it is the default)."""
    from scorecam_cli.layers import default_layer, layer_shape, parse_layer
    from scorecam_cli.models import load_model

    with user_errors():
        loaded = load_model(model, weights)
        size = (input_size, input_size) if input_size else loaded.preprocessing.input_size
        if layer is None:
            info = default_layer(loaded.module, size)
            ref, shape = info.ref, info.shape
            log.info("layer %s (default), %s", ref, _shape_text(shape))
        else:
            ref = parse_layer(loaded.module, layer)
            shape = layer_shape(loaded.module, ref, size)
            log.debug("layer %s, %s", ref, _shape_text(shape))
    return loaded, ref, size


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape[1:])


@main.command()
@click.argument("pattern", required=False)
def models(pattern: str | None) -> None:
    """List the model names --model takes (PATTERN: a substring or a glob)."""
    from scorecam_cli.models import available_models

    for name in available_models(pattern):
        click.echo(name)


@main.command()
@click.argument("model", default="efficientnet_lite0")
@click.option("--input-size", type=click.IntRange(16), default=None, help="Dry-run input size.")
@click.option("--all", "show_all", is_flag=True, help="Also list layers whose output is no map.")
def layers(model: str, input_size: int | None, show_all: bool) -> None:
    """List MODEL's layers with their output shapes (K x h x w); the default is marked.

    Output: one line per layer, tab-separated: name, shape, and 'default' on the default.
    """
    from scorecam_cli.layers import trace_layers
    from scorecam_cli.models import load_model

    with user_errors():
        loaded = load_model(model, "none")
        size = (input_size, input_size) if input_size else loaded.preprocessing.input_size
        infos = trace_layers(loaded.module, size)
    maps = [info for info in infos if info.is_map]
    default = maps[-1].ref if maps else None
    for info in infos if show_all else maps:
        mark = "\tdefault" if info.ref == default else ""
        click.echo(f"{info.ref}\t{_shape_text(info.shape) or '-'}{mark}")


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
    input_size: int | None,
    method: str,
    class_names: tuple[str, ...],
    top_k: int,
    opts: dict[str, Any],
) -> Explainer:
    """Everything `run` and `eval` need to explain a batch, from the command-line options."""
    from scorecam_cli.cam import prepare_model, resolve_device
    from scorecam_cli.models import parse_class
    from scorecam_cli.pipeline import Explainer

    if class_names and top_k != 1:
        raise click.UsageError("give either --class or --top-k, not both")
    loaded, ref, size = load_explained_model(model, weights, layer, input_size)
    with user_errors():
        device = resolve_device(opts["device"])
        classes = [parse_class(text, loaded.categories) for text in class_names] or None
        loaded.module = prepare_model(loaded.module, device)
        config = make_config(method, **opts)
    log.debug("model %s (%s) on %s", loaded.name, loaded.weights, device)
    return Explainer(loaded, ref, device, config, classes, top_k, size)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("scorecam-out"),
    show_default=True,
    help="Output folder; outputs mirror the inputs' relative paths.",
)
@model_options
@click.option("--method", type=click.Choice(METHODS), default="scorecam", help=METHOD_HELP)
@click.option(
    "-c",
    "--class",
    "class_names",
    multiple=True,
    help="Target class, by index or name (repeatable). Default: the top-1 class.",
)
@click.option("-k", "--top-k", type=click.IntRange(1), default=1, help="Explain the top K classes.")
@cam_options
@click.option(
    "--format",
    "record_format",
    type=click.Choice(["paths", "jsonl", "tsv"]),
    default="paths",
    show_default=True,
    help="stdout record per written map: the overlay path, a JSON object, or tab-separated.",
)
@click.option("--colormap", default="jet", show_default=True, help="Any OpenCV colour map name.")
@click.option(
    "--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Heat opacity."
)
@click.option("--heatmap", "save_heatmap", is_flag=True, help="Also write the bare heatmap PNG.")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose outputs exist (resume).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first input that fails.")
@click.option(
    "--image-batch",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Images explained together.",
)
@click.option(
    "--workers", type=click.IntRange(0), default=1, show_default=True, help="Decoding processes."
)
@click.pass_context
def run(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: Path,
    model: str,
    weights: str,
    layer: str | None,
    input_size: int | None,
    method: str,
    class_names: tuple[str, ...],
    top_k: int,
    record_format: str,
    colormap: str,
    alpha: float,
    save_heatmap: bool,
    skip_existing: bool,
    overwrite: bool,
    fail_fast: bool,
    image_batch: int,
    workers: int,
    **opts: Any,
) -> None:
    """Explain images and write overlay PNGs and raw .npy maps under OUTPUT.

    INPUTS are image files, folders (searched recursively, in sorted order) or '-' for
    newline-separated paths on stdin. Each map gives <name>.c<class>.overlay.png and
    <name>.c<class>.npy (float32, the image's height x width, not normalised).

    Exit status: 0 when every input succeeded, 1 when any failed, 2 for usage errors.
    """
    from scorecam_cli import render
    from scorecam_cli.images import find_inputs
    from scorecam_cli.pipeline import Explained, RunOptions, Skipped
    from scorecam_cli.pipeline import run as run_pipeline

    try:
        render.colormap_id(colormap)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if skip_existing and overwrite:
        raise click.UsageError("give either --skip-existing or --overwrite, not both")
    explainer = make_explainer(model, weights, layer, input_size, method, class_names, top_k, opts)
    options = RunOptions(
        output_dir=output,
        colormap=colormap.lower(),
        alpha=alpha,
        save_heatmap=save_heatmap,
        skip_existing=skip_existing,
        overwrite=overwrite,
        images_per_batch=image_batch,
        workers=workers,
    )
    counts = {"maps": 0, "failed": 0, "skipped": 0, "passes": 0, "saved": 0}
    with _progress() as progress:
        for event in run_pipeline(explainer, find_inputs(inputs, sys.stdin), options):
            progress.update(1)
            if isinstance(event, Explained):
                for record in event.records:
                    _emit(_format_record(record, record_format))
                counts["maps"] += len(event.records)
                counts["passes"] += event.records[0].forward_passes if event.records else 0
                counts["saved"] += event.records[0].forward_passes_saved if event.records else 0
            elif isinstance(event, Skipped):
                counts["skipped"] += 1
            else:
                counts["failed"] += 1
                progress.clear()
                _report_failure(event)
                if fail_fast:
                    break
    log.info(
        "%(maps)d maps written, %(failed)d inputs failed, %(skipped)d skipped; masked forward "
        "passes: %(passes)d run, %(saved)d saved by sharing identical masks",
        counts,
    )
    ctx.exit(1 if counts["failed"] else 0)


def _report_failure(failure: Failure) -> None:
    """One line on stderr naming the file and the reason."""
    reason = failure.reason
    text = reason if reason.startswith(failure.input) else f"{failure.input}: {reason}"
    click.echo(f"scorecam: error: {text}", err=True)


@contextmanager
def _progress() -> Iterator[Any]:
    """A tqdm bar of images on stderr; off with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    quiet = log.getEffectiveLevel() > logging.INFO
    bar = tqdm(unit="img", file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        yield bar
    finally:
        bar.close()


RECORD_KEYS = (
    "input",
    "overlay",
    "npy",
    "heatmap",
    "class_index",
    "class_name",
    "probability",
    "model",
    "layer",
    "method",
    "forward_passes",
    "forward_passes_saved",
)


def _format_record(record: MapRecord, record_format: str) -> str:
    if record_format == "paths":
        return record.overlay
    values = {key: getattr(record, key) for key in RECORD_KEYS}
    if record_format == "jsonl":
        return json.dumps(values, ensure_ascii=False)
    return "\t".join("" if v is None else str(v) for v in values.values())


def _emit(line: str) -> None:
    """Write one record to stdout and flush it, so a pipe sees each record at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def entry_point() -> None:
    """The console script: a closed stdout (``| head -n 1``) ends the run quietly."""
    try:
        main()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


@main.command(name="eval")
@click.argument("inputs", nargs=-1, required=True)
@model_options
@click.option(
    "--method",
    "methods",
    type=click.Choice(METHODS),
    multiple=True,
    help="A method to measure (repeatable). Default: scorecam and gradcam.",
)
@click.option(
    "-c",
    "--class",
    "class_names",
    multiple=True,
    help="Judge every image on this class (index or name). Default: its top-1 class.",
)
@cam_options
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Deletion/insertion steps.",
)
@click.option(
    "--sanity",
    is_flag=True,
    help="Also re-run on copies of the model randomised layer by layer from the top "
    "(cascading randomisation) and report the Spearman rank correlation with the original maps.",
)
@click.option(
    "--format",
    "record_format",
    type=click.Choice(["table", "jsonl", "csv"]),
    default="table",
    show_default=True,
    help="A table, or one JSON object / CSV row per method.",
)
@click.option("--image-batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=1, show_default=True)
@click.pass_context
def evaluate(
    ctx: click.Context,
    inputs: tuple[str, ...],
    model: str,
    weights: str,
    layer: str | None,
    input_size: int | None,
    methods: tuple[str, ...],
    class_names: tuple[str, ...],
    steps: int,
    sanity: bool,
    record_format: str,
    image_batch: int,
    workers: int,
    **opts: Any,
) -> None:
    """Measure how faithful each method's maps are on INPUTS.

    \b
    Average Drop %: 100 * mean max(0, Y - O) / Y, where Y is the class probability of the image
      and O that of the image multiplied by its min-max normalised map. Lower is better.
    Increase in Confidence %: 100 * share of images with O > Y. Higher is better.
    Deletion AUC: remove pixels (set to the mean colour) most salient first, in --steps steps;
      area under the class probability over the fraction removed. Lower is better.
    Insertion AUC: start from a Gaussian-blurred copy (kernel 11, sigma 5) and put the original
      pixels back, most salient first; area under the probability curve. Higher is better.
    """
    from scorecam_cli.images import find_inputs
    from scorecam_cli.pipeline import Failure, RunOptions
    from scorecam_cli.pipeline import evaluate as evaluate_inputs

    chosen = methods or ("scorecam", "gradcam")
    explainer = make_explainer(
        model, weights, layer, input_size, chosen[0], class_names[:1], 1, opts
    )
    configs = [make_config(method, **opts) for method in chosen]
    failed = 0

    with _progress() as progress:

        def on_event(event: object) -> None:
            nonlocal failed
            progress.update(1)
            if isinstance(event, Failure):
                failed += 1
                progress.clear()
                _report_failure(event)

        options = RunOptions(output_dir=Path("."), images_per_batch=image_batch, workers=workers)
        with user_errors():
            reports = evaluate_inputs(
                explainer,
                configs,
                find_inputs(inputs, sys.stdin),
                steps=steps,
                sanity=sanity,
                options=options,
                on_event=on_event,
            )
    if not reports:
        raise Fatal("no input could be read")
    rows = [_report_row(report) for report in reports]
    if record_format == "jsonl":
        for report, row in zip(reports, rows, strict=True):
            _emit(json.dumps({**row, "sanity": _sanity_steps(report)} if sanity else row))
    else:
        _emit_table(rows, csv=record_format == "csv")
    ctx.exit(1 if failed else 0)


def _report_row(report: Any) -> dict[str, Any]:
    f = report.faithfulness
    row: dict[str, Any] = {
        "method": report.method,
        "images": f.images,
        "average_drop_percent": round(f.average_drop, 3),
        "increase_in_confidence_percent": round(f.increase_in_confidence, 3),
        "deletion_auc": round(f.deletion_auc, 4),
        "insertion_auc": round(f.insertion_auc, 4),
    }
    if report.sanity:
        row["sanity_spearman_fully_random"] = round(report.sanity[-1].correlation, 4)
    return row


def _sanity_steps(report: Any) -> list[dict[str, Any]]:
    """The sanity check's steps as JSON: which module, how many of all, the mean correlation."""
    return [
        {
            "module": step.module,
            "randomised": step.randomised,
            "of": step.total,
            "spearman": round(step.correlation, 4),
        }
        for step in report.sanity
    ]


def _emit_table(rows: list[dict[str, Any]], csv: bool) -> None:
    keys = list(rows[0])
    if csv:
        _emit(",".join(keys))
        for row in rows:
            _emit(",".join(str(row[k]) for k in keys))
        return
    cells = [keys, *[[str(row[k]) for k in keys] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(keys))]
    for line in cells:
        _emit(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
