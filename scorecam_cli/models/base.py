"""What every model source shares: the loaded-model record, preprocessing, weights, classes."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from scorecam_cli.errors import UnknownClass, UnsupportedModel, WeightsError

if TYPE_CHECKING:
    from scorecam_cli.models.onnx_model import OnnxModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images are fed to the model: resized to ``input_size`` (H, W), then normalised."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class LoadedModel:
    """What a model source returns: the model in eval mode (the runtime: a torch module, or an
    ONNX file's graph), what it takes to feed it, its class names and what its weights are.
    Changed with ``dataclasses.replace`` only.

    ``preprocessing.input_size`` is the model's native size: its weights' crop size, or the size
    it is built for (ViT, MaxViT: 224; timm: its data config). ``num_classes`` is C of its
    (N, C) logits once known (the explainer's dry run), else None.
    """

    name: str
    module: nn.Module | OnnxModel
    preprocessing: Preprocessing
    categories: list[str] | None
    weights: str
    num_classes: int | None = None

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
        raise WeightsError(f"weights file {path} is a folder; give the state-dict file in it")
    if not file.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path}: refused: it holds Python objects, not only tensors (loading it could run "
            "code); save a plain state dict with torch.save(model.state_dict(), FILE)"
        ) from None
    except Exception as exc:
        raise WeightsError(f"{path}: not a loadable state dict ({_load_error_line(exc)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: does not fit the model ({_load_error_line(exc)})") from exc
    problems = [
        f"{len(keys)} {what} key(s): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise WeightsError(f"{path}: does not fit the model ({'; '.join(problems)})")


def _load_error_line(exc: BaseException) -> str:
    """The first line of a loading error, without torch's advice to load with weights_only=False."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    kept = [
        line
        for line in lines
        if "weights_only" not in line
        and "pickle" not in line.lower()
        and not line.startswith("Error(s) in loading")
    ]
    return (kept or [type(exc).__name__])[0]


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
