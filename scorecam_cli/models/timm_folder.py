"""timm folders as a source: ``save_for_hf`` / ``push_to_hf_hub`` layout (extra ``timm``).

``config.json`` holds ``architecture``, ``num_classes``, ``model_args``, ``label_names`` and
``pretrained_cfg`` (input size, mean, std); timm builds the architecture from it offline (its own
``local-dir:`` source, with no weights), and the weights (``model.safetensors``, else
``pytorch_model.bin``) are read here, weights-only, and must fit every entry. Class names come
from ``label_names``; mean, std and input size from timm's data config of the built model.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from scorecam_cli.errors import BadModelFile, UnknownModel, WeightsError, first_line
from scorecam_cli.models.base import LoadedModel, Preprocessing
from scorecam_cli.models.checkpoints import load_checked, load_state_dict_file, read_state_dict
from scorecam_cli.models.folders import CONFIG, weights_file
from scorecam_cli.models.labels import class_names
from scorecam_cli.models.timm_source import imagenet_names_of, timm_package

LOCAL_DIR = "local-dir:"  # timm's own prefix for a folder in this layout


def load_timm_folder(folder: Path, weights: str, config: dict[str, object]) -> LoadedModel:
    """The timm model saved in ``folder`` with ``weights``: DEFAULT (the folder's), none or a
    PATH (a state dict of the same architecture); ``config`` is its ``config.json`` as read
    (:func:`~scorecam_cli.models.folders.read_json`; timm reads it again to build the model)."""
    timm = timm_package()
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        close = difflib.get_close_matches(str(architecture), timm.list_models(), n=3, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownModel(
            f"{folder / CONFIG}: architecture {architecture!r} is no timm model{hint}"
        )
    try:
        module = timm.create_model(LOCAL_DIR + str(folder), pretrained=False)
    except Exception as exc:  # model_args the architecture does not take, a bad pretrained_cfg
        line = first_line(exc)[:300]
        raise UnknownModel(f"{folder / CONFIG}: timm cannot build it: {line}") from None
    if weights == "DEFAULT":
        path = str(weights_file(folder))
        try:
            state = read_state_dict(path)
        except WeightsError as error:  # a model folder's file: a bad --model, exit 2
            raise BadModelFile(str(error)) from None
        load_checked(module, state, path, f"timm {architecture}")
        label = f"DEFAULT ({folder})"
    else:
        if weights != "none":
            load_state_dict_file(module, weights)
        label = weights
    data = timm.data.resolve_model_data_config(module)
    _, height, width = data["input_size"]
    prep = Preprocessing(
        (int(height), int(width)),
        tuple(float(v) for v in data["mean"]),
        tuple(float(v) for v in data["std"]),
    )
    names = _label_names(config)
    where = f"{folder / CONFIG} label_names"
    categories = class_names(names, where) if names is not None else imagenet_names_of(module)
    return LoadedModel(str(folder), module.eval(), prep, categories, label)


def _label_names(config: dict[str, object]) -> object:
    """``label_names`` at the top of the config, else in its ``pretrained_cfg`` (None: none)."""
    if config.get("label_names") is not None:
        return config["label_names"]
    pretrained = config.get("pretrained_cfg")
    return pretrained.get("label_names") if isinstance(pretrained, dict) else None
