"""Layer layouts: NHWC and token outputs read as (N, C, h, w) maps, decided from the model."""

from __future__ import annotations

import pytest
import torch
from reference import reference_scorecam
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops.misc import Permute

from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.errors import UnknownLayer
from scorecam_cli.layers import LayerRef, capture, resolve_layer, trace_layers
from scorecam_cli.layouts import NHWC, TOKENS, Layout


class SwinLike(nn.Module):
    """conv stem -> Permute to NHWC -> LayerNorm -> Linear (the NHWC target) -> mean -> head.

    At 32 x 32 the target's output is (N, 8, 8, 8): h == w == C, so the shape alone cannot say
    which dimension is the channel; the Permute in the model does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.to_nhwc = Permute([0, 2, 3, 1])
        self.norm = nn.LayerNorm(8)
        self.mix = nn.Linear(8, 8)
        self.act = nn.GELU()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.mix(self.norm(self.to_nhwc(self.stem(x)))))  # (N, h, w, C)
        return self.head(x.mean(dim=(1, 2)))


def seeded(module: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return module.eval()


def images(size: int, count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_nhwc_view_is_recovered_element_by_element():
    model = seeded(SwinLike())
    info = resolve_layer(model, "act", (32, 32))
    assert info.layout == Layout(NHWC) and info.map_shape == (8, 8, 8)
    raw: list[torch.Tensor] = []
    handle = model.act.register_forward_hook(lambda _m, _i, out: raw.append(out.detach()))
    with torch.no_grad(), capture(model, info.ref) as seen:
        model(images(32))
    handle.remove()
    out, view = raw[0], seen.value()  # (N, h, w, C) and (N, C, h, w)
    assert view.shape == (2, 8, 8, 8)
    for n in range(2):
        for c in range(8):
            for i in range(8):
                for j in range(8):
                    assert view[n, c, i, j] == out[n, i, j, c]


def test_nhwc_named_layer_default_and_forced_nchw():
    model = seeded(SwinLike())
    layouts = {str(i.ref): i.layout for i in trace_layers(model, (32, 32)) if i.layout}
    assert layouts["stem"] == Layout() and layouts["norm"] == Layout(NHWC)
    # Without the Permute's word, an (N, 8, 8, 8) output could be either: forcing is allowed.
    forced = resolve_layer(model, "act", (32, 32), layout="nchw")
    assert forced.layout == Layout() and forced.ref.layout == Layout()


def test_a_shape_that_fits_no_layout_names_the_option():
    model = seeded(SwinLike())
    with pytest.raises(UnknownLayer, match="--layout"):
        resolve_layer(model, "head", (32, 32))


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    )
    return seeded(vit)  # type: ignore[return-value]


def tiny_swin() -> SwinTransformer:
    torch.manual_seed(0)
    swin = SwinTransformer(
        patch_size=[4, 4],
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 1],
        window_size=[2, 2],
        num_classes=5,
    )
    return seeded(swin)  # type: ignore[return-value]


def test_vit_default_is_the_last_ln_1_read_as_tokens():
    info = resolve_layer(tiny_vit(), None, (32, 32))
    assert str(info.ref) == "encoder.layers.encoder_layer_1.ln_1"
    assert info.layout == Layout(TOKENS, 1, (4, 4)) and info.map_shape == (16, 4, 4)


def test_prefix_tokens_option_changes_the_grid_fit():
    # 17 tokens = 1 + 4 x 4; with 2 prefix tokens they no longer fit the model's grid.
    infos = trace_layers(tiny_vit(), (32, 32), prefix_tokens=2)
    assert not any(i.layout and i.layout.kind == TOKENS for i in infos)


def test_swin_default_is_the_last_stage_norm_in_nhwc():
    info = resolve_layer(tiny_swin(), None, (32, 32))
    assert str(info.ref) == "norm" and info.layout == Layout(NHWC)
    assert info.map_shape == (16, 4, 4)


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5).eval()


@pytest.mark.parametrize(
    ("build", "layer", "size", "count"),
    [
        (small_resnet, None, 64, 1),  # 512 channels: one image keeps the reference quick
        (lambda: seeded(SwinLike()), "act", 32, 2),
        (tiny_vit, None, 32, 2),
        (tiny_swin, None, 32, 2),
    ],
    ids=["cnn-nchw", "nhwc-block", "vit-tokens", "swin-nhwc"],
)
def test_exact_scorecam_equals_the_float64_reference_after_the_layout(build, layer, size, count):
    model = build()
    info = resolve_layer(model, layer, (size, size))
    batch = images(size, count)
    result = compute_cams(model, info.ref, batch, config=CamConfig(batch_size=5))
    assert result.forward_passes > 0
    for n in range(len(batch)):
        target = int(result.classes[n, 0])
        expected = reference_scorecam(
            model, info.ref.name, batch[n], target, view=info.layout.to_nchw
        )
        torch.testing.assert_close(result.maps[n, 0].double(), expected, rtol=1e-4, atol=1e-6)


def test_gradient_methods_flow_through_the_view():
    model = tiny_swin()
    info = resolve_layer(model, None, (32, 32))
    result = compute_cams(model, info.ref, images(32), config=CamConfig(method="gradcam"))
    assert result.maps.shape == (2, 1, 4, 4) and result.maps.abs().sum() > 0


def test_a_layer_ref_without_layout_reads_nchw():
    model = seeded(SwinLike())
    with torch.no_grad(), capture(model, LayerRef("stem")) as seen:
        model(images(32))
    assert seen.value().shape == (2, 8, 8, 8)


def test_maxvit_windows_are_not_maps_and_name_the_option():
    from torchvision.models import maxvit_t

    torch.manual_seed(0)
    model = maxvit_t().eval()
    inner = "blocks.0.layers.0.layers.window_attention.attn_layer.0"
    infos = {str(i.ref): i for i in trace_layers(model, (224, 224))}
    assert infos[inner].shape[:2] == (1, 64) and infos[inner].layout is None
    assert infos["blocks.0.layers.0.layers.window_attention"].layout == Layout()
    with pytest.raises(UnknownLayer, match="--layout nchw\\|nhwc\\|tokens"):
        resolve_layer(model, inner, (224, 224))
