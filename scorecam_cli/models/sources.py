"""The one parser of ``--model``: which source a model text names, and what it names there.

- ``efficientnet_lite0``: the embedded model;
- ``timm:NAME``: a timm model;
- ``onnx:FILE``, or any ``FILE.onnx``: an ONNX file, run in ONNX Runtime (no torch model);
- ``package.module:NAME``: a factory of your own (any other text with a colon);
- anything else: a torchvision model name.

Torch-free: the CLI asks it which source a text names before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from scorecam_cli.spec import EMBEDDED_MODEL

EMBEDDED, TORCHVISION, TIMM, MODULE, ONNX = "embedded", "torchvision", "timm", "module", "onnx"
PREFIXES = {"timm:": TIMM, "onnx:": ONNX}  # explicit forms, for paths that could be misread
ONNX_SUFFIX = ".onnx"


@dataclass(frozen=True)
class ModelSource:
    """A parsed ``--model``: the source ``kind`` and its ``target`` (a name, ``module:NAME`` or a
    file path), without the prefix."""

    kind: str
    target: str


def parse_source(text: str) -> ModelSource:
    """The source ``text`` names (see the module docstring); nothing is read or imported."""
    for prefix, kind in PREFIXES.items():
        if text.startswith(prefix):
            return ModelSource(kind, text.removeprefix(prefix))
    if text.lower().endswith(ONNX_SUFFIX):
        return ModelSource(ONNX, text)
    if text == EMBEDDED_MODEL:
        return ModelSource(EMBEDDED, text)
    if ":" in text:
        return ModelSource(MODULE, text)
    return ModelSource(TORCHVISION, text)


def is_onnx(text: str) -> bool:
    """Whether ``--model text`` names an ONNX file."""
    return parse_source(text).kind == ONNX
