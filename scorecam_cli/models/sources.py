"""The one parser of ``--model``: which source a model text names, and what it names there.

- ``efficientnet_lite0``: the embedded model;
- ``timm:NAME``: a timm model; ``timm:DIR``: a timm folder (``save_for_hf`` layout);
- ``hf:DIR``: a Hugging Face ``save_pretrained`` folder;
- ``onnx:FILE``, or any ``FILE.onnx``: an ONNX file, run in ONNX Runtime (no torch model);
- ``DIR`` (a text that looks like a path: ``./x``, ``a/b``, ``~/x``, or a bare name that is a
  folder with a ``config.json``): a model folder, Hugging Face or timm as its ``config.json``
  says (:mod:`.folders`);
- ``package.module:NAME``: a factory of your own (any other text with a colon);
- anything else: a torchvision model name.

Torch-free: the CLI asks it which source a text names before anything heavy is imported. Nothing
is read or imported; only whether a bare name is a folder with a ``config.json`` is looked up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from scorecam_cli.spec import EMBEDDED_MODEL

EMBEDDED, TORCHVISION, TIMM, MODULE, ONNX = "embedded", "torchvision", "timm", "module", "onnx"
HF_FOLDER, TIMM_FOLDER, FOLDER = "hf-folder", "timm-folder", "folder"  # FOLDER: config.json says
FOLDERS = (HF_FOLDER, TIMM_FOLDER, FOLDER)
PREFIXES = {"timm:": TIMM, "onnx:": ONNX, "hf:": HF_FOLDER}  # explicit forms
ONNX_SUFFIX = ".onnx"


@dataclass(frozen=True)
class ModelSource:
    """A parsed ``--model``: the source ``kind`` and its ``target`` (a name, ``module:NAME`` or a
    file or folder path), without the prefix."""

    kind: str
    target: str


def parse_source(text: str) -> ModelSource:
    """The source ``text`` names (see the module docstring)."""
    for prefix, kind in PREFIXES.items():
        if text.startswith(prefix):
            target = text.removeprefix(prefix)
            if kind == TIMM and looks_like_path(target):
                return ModelSource(TIMM_FOLDER, target)
            return ModelSource(kind, target)
    if text.lower().endswith(ONNX_SUFFIX):
        return ModelSource(ONNX, text)
    if text == EMBEDDED_MODEL:
        return ModelSource(EMBEDDED, text)
    if looks_like_path(text):
        return ModelSource(FOLDER, text)
    if ":" in text:
        return ModelSource(MODULE, text)
    return ModelSource(TORCHVISION, text)


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a folder rather than a registry name: a text with a path separator
    or a leading ``.`` or ``~`` (``module:NAME`` has neither), or a bare name that is a folder
    with a ``config.json`` (a plain folder named ``resnet50`` does not hide the architecture)."""
    if text.startswith((".", "~")) or "/" in text or os.sep in text:
        return True
    return os.path.isfile(os.path.join(text, "config.json"))


def is_onnx(text: str) -> bool:
    """Whether ``--model text`` names an ONNX file."""
    return parse_source(text).kind == ONNX
