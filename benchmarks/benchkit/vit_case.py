"""ViT cases: a random-init vision transformer whose default layer (tokens) every tool can hook.

The default layer of a torchvision ViT is the last block's ``ln_1``, whose output is tokens
(N, 1 + h*w, C). scorecam-cli reads it as maps (N, C, h, w) through its layout; the peers hook
a module's output as it is. So the case taps the layer: :class:`GridTap` replaces it with the
same module followed by ``grid``, an identity module whose input and output are scorecam-cli's
(N, C, h, w) view, and then rebuilds the tokens from that view, bit for bit. Every tool
explains ``<layer>.grid``: the same tensor, and the same logits as the untapped model.
"""

from __future__ import annotations

import torch
from torch import nn

from scorecam_cli.layers import LayerRef, capture, default_layer, parse_layer
from scorecam_cli.layouts import Layout
from scorecam_cli.models import load_model

TOKEN_MODELS = ("vit_b_16",)  # build_model's names for this module's cases


class GridTap(nn.Module):
    """``layer`` followed by ``grid`` (an identity) on its output's (N, C, h, w) view."""

    def __init__(self, layer: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.layer = layer
        self.layout = layout
        self.grid = nn.Identity()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        tokens = self.layer(inputs)  # (N, P + h*w, C)
        view = self.grid(self.layout.to_nchw(tokens))  # (N, C, h, w)
        return self.layout.from_nchw(view, tokens)  # (N, P + h*w, C), equal to ``tokens``


def init_zero_weights(module: nn.Module, std: float = 0.02) -> None:
    """Random values for weight matrices left all zero (torchvision zero-initialises ViT's head,
    which would make every logit 0 and every Score-CAM weight equal)."""
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim > 1 and not param.any():
                param.normal_(0, std)


def tap_default_layer(module: nn.Module, size: tuple[int, int]) -> tuple[str, str]:
    """Replace ``module``'s default layer (tokens) by a :class:`GridTap`, in place.

    Returns the tapped layer's name for the tools (``<layer>.grid``) and scorecam-cli's label
    of the untapped layer (e.g. ``encoder.layers.encoder_layer_11.ln_1 (tokens+1)``).
    """
    info = default_layer(module, size)
    layout = info.layout
    if layout is None or info.ref.call is not None:
        raise SystemExit(f"default layer {info.ref} is no single-call token map")
    parent_name, _, attr = info.ref.name.rpartition(".")
    parent = module.get_submodule(parent_name)
    setattr(parent, attr, GridTap(getattr(parent, attr), layout))
    return f"{info.ref.name}.grid", f"{info.ref} ({layout})"


def build_vit(name: str, size: tuple[int, int]) -> tuple[nn.Module, str, str, object]:
    """(random-init ``name``, seed 0, with its default layer tapped, on the CPU; the tapped
    layer's name; its label; the model's preprocessing)."""
    torch.manual_seed(0)
    loaded = load_model(name, weights="none")
    module = loaded.module.eval()
    init_zero_weights(module)
    layer, label = tap_default_layer(module, size)
    return module, layer, label, loaded.preprocessing


def check_grid_tap(module: nn.Module, layer: str, images: torch.Tensor) -> str | None:
    """None if ``module`` has no GridTap at ``layer``; else a one-line report, after checking
    that the tap changes nothing (its output equals the layer's) and that ``grid`` sees exactly
    scorecam-cli's view of the layer. Raises SystemExit when either differs."""
    tap_name = layer.removesuffix(".grid")
    tap = dict(module.named_modules()).get(tap_name)
    if not isinstance(tap, GridTap):
        return None
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        tap.layer.register_forward_hook(lambda _m, _i, out: seen.update(layer=out.clone())),
        tap.register_forward_hook(lambda _m, _i, out: seen.update(tap=out.clone())),
    ]
    inner = LayerRef(f"{tap_name}.layer", layout=tap.layout)
    try:
        with (
            torch.inference_mode(),
            capture(module, parse_layer(module, layer)) as grid,
            capture(module, inner) as view,
        ):
            module(images)
    finally:
        for hook in hooks:
            hook.remove()
    tokens = float((seen["layer"] - seen["tap"]).abs().max())
    maps = float((grid.value() - view.value()).abs().max())
    if tokens > 0 or maps > 0:
        raise SystemExit(f"grid tap differs: tokens {tokens}, maps {maps}")
    shape = tuple(view.value().shape)
    return f"grid tap check: tokens unchanged, grid == scorecam-cli's view {shape}"
