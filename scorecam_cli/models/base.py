"""What every model source shares: the loaded-model record, preprocessing, weights, classes."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from scorecam_cli.errors import UnknownClass, UnsupportedModel

if TYPE_CHECKING:
    from scorecam_cli.models.onnx_model import OnnxModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors"}


@dataclass(frozen=True)
class Preprocessing:
    """How images are fed to the model: resized to ``input_size`` (H, W), then normalised with
    ``mean`` and ``std``, one value per input channel: 3 (RGB) or 1 (grayscale)."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def channels(self) -> int:
        """Input channels the model takes: 3 (RGB) or 1 (grayscale)."""
        return len(self.mean)


@dataclass(frozen=True)
class LoadedModel:
    """What a model source returns: the model in eval mode (the runtime: a torch module, or an
    ONNX file's graph), what it takes to feed it, its class names and what its weights are.
    Changed with ``dataclasses.replace`` only.

    ``preprocessing.input_size`` is the model's native size: its weights' crop size, or the size
    it is built for (ViT, MaxViT: 224; timm: its data config). ``num_classes`` is C of its
    (N, C) logits once known (the explainer's dry run), else None. ``labels`` is the
    ``--labels`` file the class names came from (None: the source's own names, or none).
    ``head`` is the head the source says its outputs have (``auto``: none said; a multi-label
    Hugging Face folder: ``sigmoid``); ``--head`` overrides it.
    """

    name: str
    module: nn.Module | OnnxModel
    preprocessing: Preprocessing
    categories: list[str] | None
    weights: str
    num_classes: int | None = None
    labels: str | None = None
    head: str = "auto"

    def class_name(self, index: int) -> str | None:
        """The class name of output ``index``, or None when the model has no names."""
        if self.categories is None or not 0 <= index < len(self.categories):
            return None
        return self.categories[index]

    def torch_module(self, needs: str = "this") -> nn.Module:
        """The torch model; UnsupportedModel (one line) for an ONNX file, saying that ``needs``
        (a method, an option) needs a torch model."""
        if isinstance(self.module, nn.Module):
            return self.module
        raise UnsupportedModel(
            f"{self.name}: {needs} needs a PyTorch model (its gradients or layers), and this is "
            "an ONNX file: explain it with scorecam, faster-scorecam, sscam or iscam"
        )


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in torchvision's order (no download needed).

    Read from ``imagenet_classes.txt`` beside this module (the names of torchvision's ImageNet
    weights, one per line; a test keeps them equal): importing torchvision costs about 2 s of
    start-up, which the embedded model does not need.
    """
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


def weights_spec(weights: str | None) -> str:
    """``none``, ``DEFAULT`` or the text as given (a weights name or a PATH)."""
    if weights is None or weights.lower() == "none":
        return "none"
    return "DEFAULT" if weights.upper() == "DEFAULT" else weights


def is_path(spec: str) -> bool:
    """Whether a --weights value names a file rather than a weights name."""
    return Path(spec).suffix in WEIGHT_SUFFIXES or "/" in spec or Path(spec).exists()


def parse_class(text: str, categories: list[str] | None) -> int:
    """A target class from its index (``281``) or its name (``tabby``, case-insensitive)."""
    if text.strip().lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (categories is not None and index >= len(categories)):
            raise UnknownClass(f"class index {index} is out of range")
        return index
    if categories is None:
        raise UnknownClass(f"class {text!r}: this model has no class names; give an index")
    lowered = [c.lower() for c in categories]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=5, cutoff=0.6)
    hint = f"; closest: {', '.join(categories[lowered.index(c)] for c in close)}" if close else ""
    raise UnknownClass(f"no class named {text!r}{hint}")
