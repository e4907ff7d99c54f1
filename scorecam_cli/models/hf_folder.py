"""Hugging Face ``save_pretrained`` folders as a source (the optional extra ``scorecam-cli[hf]``).

transformers is imported only here and only when a folder is asked for; it never reaches the hub
(``local_files_only``) and never runs code from a folder (the config is one of transformers' own
config classes, filled from the bounded read of ``config.json``; ``trust_remote_code=False``
everywhere: a folder that needs its own code is refused). From the folder:

- ``config.json``: the architecture (its ``architectures[0]`` when transformers has that image
  classifier, e.g. ``DeiTForImageClassificationWithTeacher``, else the image classifier of its
  ``model_type``), the class names (``id2label``) and the head (``problem_type``
  ``multi_label_classification``: sigmoid);
- ``preprocessor_config.json``: mean, std and the input size (the centre crop's size when the
  processor crops, else ``size`` as ``{height, width}``, ``{shortest_edge}`` or an int); its
  rescaling folded into mean and std; without the file, ImageNet's mean and std and the config's
  ``image_size``, said in one line. Images are resized whole to the input size (never cropped),
  as for every model, so that a map covers the whole image;
- the weights (``model.safetensors``, else ``pytorch_model.bin``, read weights-only): every entry
  of the classifier must be there; a folder that lacks some (a base model saved without its
  head) is refused instead of explained with random layers.

The model returns an output object whose ``.logits`` the loader reduces to (N, C) logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from scorecam_cli.errors import BadModelFile, CheckpointMismatch, UnknownModel, first_line
from scorecam_cli.models.base import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, Preprocessing
from scorecam_cli.models.checkpoints import load_state_dict_file
from scorecam_cli.models.folders import CONFIG, read_json
from scorecam_cli.models.labels import class_names

log = logging.getLogger("scorecam_cli")

PROCESSOR = "preprocessor_config.json"
MULTI_LABEL = "multi_label_classification"
DEFAULT_SIZE = (224, 224)  # when neither the processor nor the config gives one


def _transformers() -> ModuleType:
    try:
        import transformers
    except ImportError:
        raise UnknownModel(
            "Hugging Face folders need the transformers package: pip install 'scorecam-cli[hf]'"
        ) from None
    return transformers


def load_hf_folder(folder: Path, weights: str, raw: dict[str, object]) -> LoadedModel:
    """The image classifier saved in ``folder`` with ``weights``: DEFAULT (the folder's), none
    (random, from its config) or a PATH (a state dict of the same architecture); ``raw`` is its
    ``config.json`` as read (:func:`~scorecam_cli.models.folders.read_json`)."""
    transformers = _transformers()
    if "model_type" not in raw and isinstance(raw.get("architecture"), str):
        raise UnknownModel(f"{folder}: a timm folder (its config.json has no model_type): timm:DIR")
    with _quiet(transformers):
        config = _config(transformers, folder, raw)
        architecture = _architecture(transformers, config, folder)
        if weights == "DEFAULT":
            module, label = _pretrained(architecture, folder, config), f"DEFAULT ({folder})"
        else:
            module, label = _built(architecture, config, folder), weights
            if weights != "none":
                load_state_dict_file(module, weights)
        prep = _preprocessing(transformers, folder, config)
    id2label = getattr(config, "id2label", None)
    categories = class_names(id2label, f"{folder / CONFIG} id2label") if id2label else None
    head = "sigmoid" if getattr(config, "problem_type", None) == MULTI_LABEL else "auto"
    return LoadedModel(str(folder), module.float().eval(), prep, categories, label, head=head)


@contextlib.contextmanager
def _quiet(transformers: ModuleType) -> Iterator[None]:
    """transformers' warnings and progress bars off while it loads (errors still raise)."""
    hf_logging = transformers.utils.logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _config(transformers: ModuleType, folder: Path, raw: dict[str, object]) -> Any:
    """The config class of ``raw``'s ``model_type`` among transformers' own (never a folder's
    code), filled from ``raw``."""
    where = folder / CONFIG
    model_type = raw.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise UnknownModel(
            f"{where}: model_type {model_type!r} is not one transformers knows "
            "(a folder's own model code is never run)"
        )
    try:
        return transformers.CONFIG_MAPPING[model_type].from_dict(dict(raw))
    except Exception as exc:  # a field the config class cannot take
        raise UnknownModel(f"{where}: transformers cannot read it: {_line(exc)}") from None


def _architecture(transformers: ModuleType, config: Any, folder: Path) -> Any:
    """The image-classifier class of ``config``: its ``architectures[0]`` when that is one of
    transformers' image classifiers, else the one registered for its ``model_type``."""
    named = (getattr(config, "architectures", None) or [None])[0]
    if isinstance(named, str) and "ForImageClassification" in named:
        found = getattr(transformers, named, None)
        if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
            return found
    mapping = transformers.models.auto.modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    name = mapping.get(config.model_type)
    found = getattr(transformers, name, None) if isinstance(name, str) else None
    if found is None:
        raise UnknownModel(
            f"{folder}: a {config.model_type!r} model ({named or 'no architectures'}), which "
            "transformers has no image classifier for; scorecam explains classifiers"
        )
    return found


def _built(architecture: Any, config: Any, folder: Path) -> nn.Module:
    """``architecture`` built from ``config`` with random weights (seeded by the loader)."""
    try:
        return architecture(config)
    except Exception as exc:  # a config field the architecture cannot take
        raise UnknownModel(
            f"{folder / CONFIG}: transformers cannot build {architecture.__name__}: {_line(exc)}"
        ) from None


def _pretrained(architecture: Any, folder: Path, config: Any) -> nn.Module:
    """The folder's model with its own weights; every weight of the architecture must be there."""
    try:
        module, info = architecture.from_pretrained(
            str(folder),
            config=config,
            local_files_only=True,
            trust_remote_code=False,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except Exception as exc:  # no weights file, a corrupt one, a pickle that is not weights
        raise BadModelFile(f"{folder}: cannot load its weights ({_line(exc)})") from None
    missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if missing:
        first = missing[0] if isinstance(missing[0], str) else missing[0][0]
        raise CheckpointMismatch(
            f"{folder}: its weights lack {len(missing)} entr{'ies' if len(missing) > 1 else 'y'} "
            f"of {architecture.__name__} or do not fit them (e.g. {first}): a base model saved "
            "without its classifier? Explain a model saved with its head"
        )
    return module


def _preprocessing(transformers: ModuleType, folder: Path, config: Any) -> Preprocessing:
    native = _pair(getattr(config, "image_size", None))
    if not (folder / PROCESSOR).exists():
        fallback = native or DEFAULT_SIZE
        log.info(
            "%s: no %s: ImageNet mean and std, input size %dx%d (--mean, --std, --input-size)",
            folder, PROCESSOR, *fallback,
        )  # fmt: skip
        return Preprocessing(fallback, IMAGENET_MEAN, IMAGENET_STD)
    read_json(folder / PROCESSOR)  # a regular file under the limit: then transformers parses it
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        where = folder / PROCESSOR
        raise UnknownModel(f"{where}: transformers cannot read it: {_line(exc)}") from None
    size = _processor_size(processor) or native
    if size is None:
        size = DEFAULT_SIZE
        log.info("%s: no input size: %dx%d (--input-size)", folder / PROCESSOR, *size)
    mean, std = _normalisation(processor, folder)
    return Preprocessing(size, mean, std)


def _processor_size(processor: Any) -> tuple[int, int] | None:
    """(H, W) the model takes: the crop when the processor crops, else its resize target."""
    crop = _as_dict(getattr(processor, "crop_size", None))
    if getattr(processor, "do_center_crop", False) and crop.get("height") and crop.get("width"):
        return int(crop["height"]), int(crop["width"])
    size = getattr(processor, "size", None)
    if isinstance(size, int):
        return size, size
    sides = _as_dict(size)
    if sides.get("height") and sides.get("width"):
        return int(sides["height"]), int(sides["width"])
    edge = sides.get("shortest_edge") or sides.get("longest_edge")
    return (int(edge), int(edge)) if edge else None


def _normalisation(processor: Any, folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std for images scaled to [0, 1], the processor's rescaling folded in: it feeds
    (x * 255 * rescale_factor - mean) / std for 8-bit pixels x / 255."""
    if getattr(processor, "do_normalize", True):
        mean = getattr(processor, "image_mean", None) or IMAGENET_MEAN
        std = getattr(processor, "image_std", None) or IMAGENET_STD
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = _per_channel(mean), _per_channel(std)
    if len(mean) != len(std) or not all(v > 0 for v in std):
        raise UnknownModel(f"{folder / PROCESSOR}: image_mean and image_std do not fit")
    factor = float(getattr(processor, "rescale_factor", 1 / 255))
    scale = 255 * factor if getattr(processor, "do_rescale", True) else 255.0
    if abs(scale - 1) > 1e-9:
        mean = tuple(v / scale for v in mean)
        std = tuple(v / scale for v in std)
    return mean, std


def _per_channel(values: object) -> tuple[float, ...]:
    items = values if isinstance(values, (list, tuple)) else [values]
    return tuple(float(v) for v in items)  # type: ignore[arg-type]


def _as_dict(value: object) -> dict[str, Any]:
    """A size as a dict: transformers' SizeDict, a plain dict, or nothing."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    return {}


def _pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _line(exc: BaseException) -> str:
    return first_line(exc)[:300]
