"""Model folders: which kind a folder is, and its files read as untrusted input (the loaders are
:mod:`.hf_folder` and :mod:`.timm_folder`).

A folder's ``config.json`` says what it holds: a Hugging Face ``save_pretrained`` folder has
``model_type`` (and ``architectures``), a timm folder (``save_for_hf`` / ``push_to_hf_hub``
layout) has ``architecture``. ``hf:DIR`` and ``timm:DIR`` say it without looking. Every problem is
one line naming the folder or the file (:class:`~scorecam_cli.errors.UnknownModel`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from scorecam_cli.errors import BadModelFile, UnknownModel
from scorecam_cli.file_limits import read_or_fail
from scorecam_cli.models.sources import HF_FOLDER, TIMM_FOLDER

CONFIG = "config.json"
MAX_JSON_BYTES = 16 * 2**20  # a config with 21k class names is under 1 MB
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first one present is read


def folder_kind(folder: Path, config: dict[str, object]) -> str:
    """hf-folder or timm-folder, from the keys of ``config`` (the folder's config.json)."""
    if isinstance(config.get("architecture"), str):
        return TIMM_FOLDER
    if isinstance(config.get("model_type"), str):
        return HF_FOLDER
    raise UnknownModel(
        f"{folder / CONFIG}: neither a Hugging Face config (model_type) nor a timm one "
        "(architecture)"
    )


def read_json(path: Path) -> dict[str, object]:
    """The JSON object in regular file ``path`` (at most MAX_JSON_BYTES), or one line saying why
    not."""
    if not os.path.lexists(path):
        raise UnknownModel(f"{path.parent}: no {path.name}: not a model folder")
    too_large = f"over {MAX_JSON_BYTES // 2**20} MB; not a model config"
    data = read_or_fail(path, MAX_JSON_BYTES, UnknownModel, str(path), too_large)
    try:
        parsed = json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError) as error:
        raise UnknownModel(f"{path}: not valid JSON ({str(error)[:200]})") from None
    if not isinstance(parsed, dict):
        raise UnknownModel(f"{path}: a JSON {type(parsed).__name__}, not an object")
    return parsed


def weights_file(folder: Path) -> Path:
    """The folder's weights file (model.safetensors, else pytorch_model.bin), or one line
    (BadModelFile)."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise BadModelFile(
        f"{folder}: no {' or '.join(WEIGHT_FILES)} in the folder (--weights none: random "
        "weights from its config.json; --weights PATH: a state dict file)"
    )
