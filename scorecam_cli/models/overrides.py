"""The end of every model load: the input channels the model's stem takes, and the user's
overrides of what its source knows (``--labels``, ``--mean``, ``--std``), applied once, for
every source (:func:`overlay`); and the one-line description of what was inferred.

Input channels come from the stem: the first ``nn.Conv2d`` of the model (registration order).
A stem of one channel makes a grayscale model: its source's RGB mean and std become their
averages, and images are fed as grayscale (colour inputs converted).
"""

from __future__ import annotations

import math
from dataclasses import replace

from torch import nn

from scorecam_cli.errors import BadRequest
from scorecam_cli.heads import Head
from scorecam_cli.models.base import LoadedModel, Preprocessing
from scorecam_cli.models.labels import read_labels


def stem_channels(module: nn.Module) -> int:
    """Input channels of the model's first convolution (3 when it has none)."""
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return int(conv.in_channels) if conv is not None else 3


def overlay(
    loaded: LoadedModel,
    labels: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> LoadedModel:
    """``loaded`` fed as its stem needs, with the user's class names and normalisation."""
    prep = loaded.preprocessing
    module = loaded.module  # an ONNX graph's input channels are checked where it loads
    if isinstance(module, nn.Module) and stem_channels(module) == 1 and prep.channels == 3:
        prep = Preprocessing(prep.input_size, (_average(prep.mean),), (_average(prep.std),))
    prep = replace(
        prep,
        mean=_values("--mean", mean, prep.channels) or prep.mean,
        std=_values("--std", std, prep.channels, positive=True) or prep.std,
    )
    loaded = replace(loaded, preprocessing=prep)
    if labels is not None:
        loaded = replace(loaded, categories=read_labels(labels), labels=labels)
    return loaded


def _average(values: tuple[float, ...]) -> float:
    return round(sum(values) / len(values), 6)


def _values(
    option: str, values: tuple[float, ...] | None, channels: int, positive: bool = False
) -> tuple[float, ...] | None:
    """``values`` as one per channel (a single value serves every channel); None: not given."""
    if values is None:
        return None
    if len(values) not in (1, channels):
        kind = "grayscale" if channels == 1 else "RGB"
        raise BadRequest(
            f"{option} has {len(values)} values; the model takes {channels} input "
            f"channel{'s' if channels != 1 else ''} ({kind}): give {channels} or 1"
        )
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
        raise BadRequest(f"{option} needs finite numbers{' above 0' if positive else ''}")
    return tuple(float(v) for v in values) * (channels // len(values))


def describe(loaded: LoadedModel, head: Head | None) -> str:
    """What the tool knows of a loaded model, in one line: classes and their names, input
    channels, head, normalisation and native size."""
    prep = loaded.preprocessing
    classes = f"{head.classes} classes" if head is not None else "outputs unknown"
    names = (
        f"names from {loaded.labels}"
        if loaded.labels
        else ("the model's own class names" if loaded.categories else "no class names (--labels)")
    )
    channels = "1 input channel (grayscale)" if prep.channels == 1 else "3 input channels (RGB)"
    size = "x".join(str(v) for v in prep.input_size)
    numbers = f"mean {_text(prep.mean)}, std {_text(prep.std)}"
    heads = f"head {head.describe()}" if head is not None else "head unknown"
    return (
        f"{loaded.name} (weights {loaded.weights}): {classes}, {names}; {channels}; {heads}; "
        f"{numbers}; native size {size}"
    )


def _text(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
