"""Layer layouts: which dimension of a layer's output is the channel, and the (N, C, h, w) view.

Score-CAM needs activations as maps (N, C, h, w). Layers give them in three layouts:

- ``nchw``: convolutional maps (N, C, h, w), as they are;
- ``nhwc``: channels-last maps (N, h, w, C) (Swin blocks, ConvNeXt's inner linear layers);
- ``tokens``: a sequence (N, P + h*w, C) of P prefix tokens (class, distillation, register tokens)
  followed by h*w patch tokens in row-major order (ViT, DeiT).

The layout of each call is decided from the model, never guessed from a shape alone: a dry run
walks the calls in the order they finish, and a state (the layout of the tensor flowing through
the model, NCHW at the input) is set by modules whose layout is known by type (convolutions, 2-D
norms and pools are NCHW; torchvision's ``Permute`` permutes it; MaxViT's window partition leaves
the map layout; timm modules state their ``output_fmt``). A 4-D output fits a layout when its
spatial sides follow the input's aspect ratio; the state decides when both fit; a shape that fits
only the other layout moves the state there (a permute inside some module's ``forward``). Token
grids come from the model's patch size and the input size (or a power-of-two multiple of the
patch: the stages of a hierarchical transformer), the prefix count from the model (torchvision
ViT: 1 class token; timm: ``num_prefix_tokens``; Hugging Face: the token parameters its
embeddings prepend) or ``--prefix-tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

NCHW, NHWC, TOKENS = "nchw", "nhwc", "tokens"
_PREPENDED = frozenset({"cls_token", "distillation_token", "register_tokens"})
_GRID_SCALES = (1, 2, 4, 8, 16, 32)  # hierarchical transformers (Swin) halve the grid per stage
_WINDOWS = "windows"  # MaxViT's partitioned windows (N, G, P, C): no map layout
_NCHW_TYPES = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


@dataclass(frozen=True)
class Layout:
    """How to read a layer's output as maps: kind, prefix tokens and the token grid (h, w)."""

    kind: str = NCHW
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def to_nchw(self, output: Tensor) -> Tensor:
        """The (N, C, h, w) view of ``output``; a view, so gradients flow through it."""
        if self.kind == NHWC:
            return output.permute(0, 3, 1, 2)  # (N, h, w, C) -> (N, C, h, w)
        if self.kind == TOKENS:
            assert self.grid is not None  # set for every tokens layout by construction
            patches = output[:, self.prefix :, :]  # (N, h*w, C)
            return patches.transpose(1, 2).unflatten(2, self.grid)  # (N, C, h, w)
        return output

    def from_nchw(self, view: Tensor, output: Tensor) -> Tensor:
        """``output`` rebuilt from its (N, C, h, w) ``view``: equal values, but computed from the
        view, so that gradients with respect to the view flow (gradient methods)."""
        if self.kind == NHWC:
            return view.permute(0, 2, 3, 1)  # (N, h, w, C)
        if self.kind == TOKENS:
            patches = view.flatten(2).transpose(1, 2)  # (N, h*w, C)
            return torch.cat([output[:, : self.prefix, :], patches], dim=1)  # (N, P + h*w, C)
        return view

    def map_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, h, w) of one image's output ``shape`` in this layout."""
        if self.kind == NHWC:
            return int(shape[3]), int(shape[1]), int(shape[2])
        if self.kind == TOKENS:
            assert self.grid is not None
            return int(shape[2]), *self.grid
        return int(shape[1]), int(shape[2]), int(shape[3])

    def __str__(self) -> str:
        return f"tokens+{self.prefix}" if self.kind == TOKENS else self.kind


@dataclass(frozen=True)
class TokenHints:
    """What the model says about its token sequences: patch size (ph, pw) and prefix count."""

    patch: tuple[int, int] | None
    prefix: int | None


def token_hints(model: nn.Module, prefix_tokens: int | None = None) -> TokenHints:
    """Patch size and prefix tokens of a ViT-like ``model`` (torchvision, timm or Hugging Face),
    if it has them.

    ``prefix_tokens`` (the ``--prefix-tokens`` option) overrides the model's own count. A
    Hugging Face model states its patch size in its ``config``; its prefix tokens are the token
    parameters its embeddings prepend (class, distillation and register tokens).
    """
    patch: object = getattr(model, "patch_size", None)
    embed = getattr(model, "patch_embed", None)
    if patch is None and embed is not None:
        patch = getattr(embed, "patch_size", None)
    config = getattr(model, "config", None)
    if patch is None and config is not None:
        patch = getattr(config, "patch_size", None)
    pair = _pair(patch)
    prefix = prefix_tokens
    if prefix is None:
        count = getattr(model, "num_prefix_tokens", None)
        if isinstance(count, int):
            prefix = count
        elif isinstance(getattr(model, "class_token", None), nn.Parameter):
            prefix = 1  # torchvision VisionTransformer: one class token, no others
        elif config is not None and pair is not None:
            prefix = _prepended_tokens(model)
    return TokenHints(pair, prefix)


def _prepended_tokens(model: nn.Module) -> int:
    """Tokens a Hugging Face model's embeddings prepend: its (1, T, C) token parameters."""
    count = 0
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] in _PREPENDED and param.ndim == 3:
            count += int(param.shape[1])
    return count


def mean_pooled(model: nn.Module) -> bool:
    """Whether a ViT-like ``model`` pools its patch tokens into the head (timm's
    ``global_pool='avg'``, Hugging Face's ``use_mean_pooling``) instead of reading a class
    token."""
    config = getattr(model, "config", None)
    return getattr(model, "global_pool", None) == "avg" or bool(
        getattr(config, "use_mean_pooling", False)
    )


def _pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return int(value[0]), int(value[1])
    return None


def fits(kind: str, shape: Sequence[int], input_size: tuple[int, int]) -> bool:
    """Whether a 4-D ``shape`` read as ``kind`` (nchw or nhwc) has sides that follow the input.

    The spatial sides (h, w) must not exceed the input's (H, W) and must keep its aspect ratio
    (w within one pixel and 10% of W * h / H): (1, 7, 7, 768) is no NCHW map of a 224 x 224 image.
    """
    if len(shape) != 4:
        return False
    h, w = (shape[2], shape[3]) if kind == NCHW else (shape[1], shape[2])
    big_h, big_w = input_size
    if not (1 <= h <= big_h and 1 <= w <= big_w):
        return False
    expected = big_w * h / big_h
    return abs(w - expected) <= 1 + 0.1 * expected


def token_layout(
    shape: Sequence[int], input_size: tuple[int, int], hints: TokenHints
) -> Layout | None:
    """The tokens layout of a 3-D ``shape`` (1, P + h*w, C), or None when it is not one.

    The grid is the input over the patch size, or over a multiple of it (patch merging of
    hierarchical transformers: 2x, 4x...); at most one such grid has h*w tokens.
    """
    if len(shape) != 3 or hints.patch is None or hints.prefix is None:
        return None
    for scale in _GRID_SCALES:
        stride = (hints.patch[0] * scale, hints.patch[1] * scale)
        grid = (input_size[0] // stride[0], input_size[1] // stride[1])
        if min(grid) >= 1 and shape[1] == hints.prefix + grid[0] * grid[1]:
            return Layout(TOKENS, hints.prefix, grid)
    return None


def forced_layout(
    kind: str, shape: Sequence[int], input_size: tuple[int, int], hints: TokenHints
) -> Layout | None:
    """The layout ``kind`` (from ``--layout``) for ``shape``, or None when the shape cannot be it.

    For tokens without a patch size from the model, the grid must be square for a square input.
    """
    if kind in (NCHW, NHWC):
        return Layout(kind) if len(shape) == 4 and fits(kind, shape, input_size) else None
    if len(shape) != 3:
        return None
    found = token_layout(shape, input_size, hints)
    if found is not None or hints.patch is not None:
        return found
    prefix = hints.prefix or 0
    side = math.isqrt(max(shape[1] - prefix, 0))
    if input_size[0] != input_size[1] or side * side != shape[1] - prefix or side < 2:
        return None
    return Layout(TOKENS, prefix, (side, side))


@dataclass
class LayoutTracker:
    """The layout state of a dry run, fed each call's module and output shape in finish order."""

    input_size: tuple[int, int]
    hints: TokenHints
    state: str = NCHW

    def classify(self, module: nn.Module, shape: Sequence[int]) -> Layout | None:
        """The layout of this call's output, or None when it is not a map the tool can read."""
        if len(shape) == 3 and shape[0] == 1:
            return token_layout(shape, self.input_size, self.hints)
        if len(shape) != 4 or shape[0] != 1:
            return None
        self._update(module)
        fitting = [kind for kind in (NCHW, NHWC) if fits(kind, shape, self.input_size)]
        if self.state in fitting:
            return Layout(self.state)
        if len(fitting) == 1 and self.state != _WINDOWS:
            self.state = fitting[0]  # a permute inside some module's forward
            return Layout(self.state)
        return None

    def _update(self, module: nn.Module) -> None:
        kind = type(module).__name__
        if isinstance(module, _NCHW_TYPES) or kind == "WindowDepartition":
            self.state = NCHW
        elif kind == "WindowPartition":
            self.state = _WINDOWS
        elif kind == "Permute" and list(getattr(module, "dims", [])) == [0, 2, 3, 1]:
            self.state = NHWC
        elif kind == "Permute" and list(getattr(module, "dims", [])) == [0, 3, 1, 2]:
            self.state = NCHW
        else:
            fmt = getattr(module, "output_fmt", None)  # timm modules state their output format
            text = str(getattr(fmt, "value", fmt) or "").lower()
            if text in (NCHW, NHWC):
                self.state = text
