"""torchvision's classification registry: models by name, weights from the torch hub cache."""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorecam_cli.errors import UnknownModel, WeightsError, first_line
from scorecam_cli.models.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadedModel,
    Preprocessing,
    is_path,
)
from scorecam_cli.models.checkpoints import (
    DEFAULT_CLASSES,
    Build,
    Fit,
    fit_architecture,
    read_state_dict,
    replace_stem,
)
from scorecam_cli.spec import EMBEDDED_MODEL


def torchvision_names() -> list[str]:
    """Every name in torchvision's classification registry."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def load_torchvision(name: str, spec: str) -> LoadedModel:
    """torchvision model ``name`` with weights ``spec``: DEFAULT, an enum name, none or a PATH."""
    import torchvision

    known = torchvision_names()
    if name not in known:
        close = difflib.get_close_matches(name, [*known, EMBEDDED_MODEL], n=5, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownModel(f"unknown model {name!r}{hint} (list them with 'scorecam models')")
    enums = torchvision.models.get_model_weights(name)
    if spec == "none":
        module = _build(name)
        return LoadedModel(name, module, _preprocessing_of(enums.DEFAULT, module), None, "none")
    if is_path(spec):
        module, fit = fit_architecture(name, fitted_builder(name), read_state_dict(spec), spec)
        imagenet = fit.num_classes in (None, DEFAULT_CLASSES)
        names = _categories_of(enums.DEFAULT) if imagenet else None  # fine-tuned: no names
        return LoadedModel(name, module, _preprocessing_of(enums.DEFAULT, module), names, spec)
    try:
        enum = enums.DEFAULT if spec == "DEFAULT" else enums[spec]
    except KeyError:
        valid = ", ".join(["DEFAULT", *(e.name for e in enums), "none", "PATH"])
        raise WeightsError(f"{name} has no weights {spec!r}; choose one of {valid}") from None
    # Built as the weights need (ViT SWAG weights fix a larger image size), then filled from the
    # cache: get_model(weights=enum) would try the network.
    module = _build(name, **_builder_args(name, enum))
    module.load_state_dict(_cached_state_dict(name, enum))
    prep = _preprocessing_of(enum, module)
    return LoadedModel(name, module, prep, _categories_of(enum), enum.name)


def _build(name: str, **args: Any) -> nn.Module:
    """torchvision's builder without weights, quiet about its future init defaults."""
    import torchvision

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        module: nn.Module = torchvision.models.get_model(name, weights=None, **args)
    return module


def fitted_builder(name: str) -> Build:
    """torchvision's builder of ``name`` for a checkpoint's Fit: ``num_classes``, and the stem
    convolution replaced by one of ``in_chans`` inputs (torchvision's builders take none)."""

    def build(fit: Fit) -> nn.Module:
        module = _build(
            name, **({} if fit.num_classes is None else {"num_classes": fit.num_classes})
        )
        if fit.in_chans is not None and fit.stem is not None:
            replace_stem(module, fit.stem, fit.in_chans)
        return module

    return build


def _builder_args(name: str, enum: Any) -> dict[str, Any]:
    """Arguments torchvision's builders set from weights: ViT's fixed image size (SWAG weights
    need 384 or 518), inception's input transform."""
    if name.startswith("vit_"):
        return {"image_size": int(enum.meta["min_size"][0])}
    if name in ("inception_v3", "googlenet"):
        return {"transform_input": True}
    return {}


def weights_cache_path(enum: Any) -> Path:
    """Where torchvision keeps the file of weights ``enum``: $TORCH_HOME/hub/checkpoints/NAME."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def _cached_state_dict(name: str, enum: Any) -> dict[str, torch.Tensor]:
    path = weights_cache_path(enum)
    try:
        state: dict[str, torch.Tensor] = enum.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:
        raise WeightsError(
            f"weights {name} {enum.name} are not cached and could not be downloaded "
            f"({first_line(exc)}): place {path.name} (from {enum.url}) at {path}, "
            f"or pass --weights PATH or --weights none"
        ) from exc
    return state


def native_size(enum: Any, module: nn.Module) -> tuple[int, int]:
    """The model's own input size: the size it is built for (ViT ``image_size``, MaxViT 224),
    else its weights' crop size (inception_v3: 299)."""
    fixed = getattr(module, "image_size", None)
    if isinstance(fixed, int):
        return fixed, fixed
    if type(module).__name__ == "MaxVit":
        return 224, 224  # torchvision builds MaxViT for 224 x 224 only
    crop = getattr(enum.transforms(), "crop_size", [224])
    size = int(crop[0]) if isinstance(crop, (list, tuple)) else int(crop)
    return size, size


def _preprocessing_of(enum: Any, module: nn.Module) -> Preprocessing:
    transforms = enum.transforms()
    mean = tuple(float(v) for v in getattr(transforms, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(transforms, "std", IMAGENET_STD))
    return Preprocessing(native_size(enum, module), mean, std)


def _categories_of(enum: Any) -> list[str] | None:
    categories = enum.meta.get("categories")
    return list(categories) if categories else None
