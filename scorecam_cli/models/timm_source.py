"""timm models as a source: ``timm:NAME`` (the optional extra ``scorecam-cli[timm]``).

timm is imported only here and only when asked for. ``--weights DEFAULT`` reads timm's pretrained
weights from the local Hugging Face cache and never from the network; mean, std and input size
come from the model's own data config.
"""

from __future__ import annotations

import fnmatch
from types import ModuleType
from typing import Any

from torch import nn

from scorecam_cli.errors import UnknownModel, WeightsError
from scorecam_cli.models.base import LoadedModel, Preprocessing, imagenet_categories, is_path
from scorecam_cli.models.checkpoints import Build, Fit, fit_architecture, read_state_dict

PREFIX = "timm:"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_package() -> ModuleType:
    """The timm package, or one line saying how to install it."""
    try:
        import timm
    except ImportError:
        raise UnknownModel(
            "timm models need the timm package: pip install 'scorecam-cli[timm]'"
        ) from None
    return timm


def timm_names(pattern: str) -> list[str]:
    """``timm:NAME`` for every timm model whose name matches the glob ``pattern``."""
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    names: list[str] = timm_package().list_models()
    return [PREFIX + name for name in names if fnmatch.fnmatch(name, glob)]


def load_timm(name: str, spec: str) -> LoadedModel:
    """timm model ``name`` (without the prefix) with weights ``spec``: DEFAULT, none or a PATH."""
    timm = timm_package()
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; closest: {', '.join(PREFIX + c for c in close)}" if close else ""
        raise UnknownModel(f"unknown timm model {name!r}{hint} (list: scorecam models 'timm:*')")
    label, categories = "none", None
    if spec == "DEFAULT":
        module = timm.create_model(name, pretrained=False)
        file = _cached_weights_file(name, module.pretrained_cfg)
        overlay = {"file": file, "source": ""}
        module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        label, categories = (
            f"DEFAULT ({module.pretrained_cfg.get('tag') or 'timm'})",
            imagenet_names_of(module),
        )
    elif spec == "none":
        module = timm.create_model(name, pretrained=False)
    else:
        if not is_path(spec):
            raise WeightsError(f"a timm model takes --weights DEFAULT, none or PATH, not {spec!r}")
        build = fitted_builder(name)
        module, _ = fit_architecture(PREFIX + name, build, read_state_dict(spec), spec)
        label, categories = spec, imagenet_names_of(module)
    config = timm.data.resolve_model_data_config(module)
    _, height, width = config["input_size"]
    mean = tuple(float(v) for v in config["mean"])
    std = tuple(float(v) for v in config["std"])
    prep = Preprocessing((int(height), int(width)), mean, std)
    return LoadedModel(PREFIX + name, module, prep, categories, label)


def fitted_builder(name: str) -> Build:
    """timm's builder of ``name`` (without the prefix) for a checkpoint's Fit: ``num_classes``
    and ``in_chans``."""
    timm = timm_package()

    def build(fit: Fit) -> nn.Module:
        sizes = {"num_classes": fit.num_classes, "in_chans": fit.in_chans}
        args = {key: value for key, value in sizes.items() if value is not None}
        module: nn.Module = timm.create_model(name, pretrained=False, **args)
        return module

    return build


def _cached_weights_file(name: str, cfg: Any) -> str:
    """The pretrained weights file of ``name`` in the local Hugging Face cache (no network)."""
    from huggingface_hub import constants, try_to_load_from_cache

    repo = getattr(cfg, "hf_hub_id", None) or (
        cfg.get("hf_hub_id") if isinstance(cfg, dict) else None
    )
    if not repo:
        raise WeightsError(
            f"timm model {name} has no pretrained weights on the Hugging Face hub; "
            "pass --weights PATH or --weights none"
        )
    for filename in _WEIGHT_FILES:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return found
    raise WeightsError(
        f"timm weights of {name} are not in the Hugging Face cache {constants.HF_HUB_CACHE}: "
        f"download {_WEIGHT_FILES[0]} of repo {repo} there (huggingface-cli download {repo}), "
        "or pass --weights PATH or --weights none"
    )


def imagenet_names_of(module: Any) -> list[str] | None:
    """ImageNet-1k class names for a 1000-class model (timm uses torchvision's order)."""
    return imagenet_categories() if getattr(module, "num_classes", None) == 1000 else None
