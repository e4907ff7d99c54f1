"""A synthetic localisation task with known object boxes, and four small model families for it.

Scenes (N, 3, S, S) hold ``objects`` objects of distinct classes on a noisy grey background, each
in its own cell of a 3 x 3 grid (so objects never overlap) at a random offset inside it. The four
classes differ in shape and colour: a red square, a green disc, a blue triangle, a yellow cross.
Targets are multi-hot (N, C): a model trained with a sigmoid per class must find each class on
its own, so a class's map can be checked to point at that class's object and not at the other.

Builders make a CNN, a ViT (torchvision's ``VisionTransformer``), a Swin (torchvision's
``SwinTransformer``) and a ConvNeXt (torchvision's ``ConvNeXt``) with tiny settings, each trained
from scratch by :func:`train` in seconds to a minute on two CPU cores. Everything is seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

CLASS_NAMES = ("red square", "green disc", "blue triangle", "yellow cross")
COLOURS = torch.tensor(
    [[0.90, 0.15, 0.15], [0.15, 0.80, 0.20], [0.20, 0.30, 0.95], [0.95, 0.85, 0.10]]
)  # (C, 3) RGB in [0, 1]
GRID = 3  # scenes are split into GRID x GRID cells, one object per cell at most
MEAN, STD = 0.5, 0.25  # model inputs are (pixels - MEAN) / STD


@dataclass(frozen=True, eq=False)
class Scenes:
    """A batch of N scenes with O objects each.

    ``pixels`` (N, 3, S, S) RGB in [0, 1]; ``targets`` (N, C) multi-hot float; ``labels`` (N, O)
    the objects' classes; ``boxes`` (N, O, 4) their pixel boxes ``x0, y0, x1, y1`` (x1, y1
    exclusive: the tightest box around the object's pixels).
    """

    pixels: Tensor
    targets: Tensor
    labels: Tensor
    boxes: Tensor

    @property
    def inputs(self) -> Tensor:
        """The model's input (N, 3, S, S): pixels normalised with MEAN and STD."""
        return (self.pixels - MEAN) / STD

    def rgb8(self, index: int) -> Tensor:
        """Scene ``index`` as (S, S, 3) uint8 RGB, for rendering."""
        return (self.pixels[index].permute(1, 2, 0) * 255).round().to(torch.uint8)


@dataclass(frozen=True)
class SyntheticTask:
    """Scenes of ``size`` x ``size`` pixels holding ``objects`` objects of distinct classes."""

    size: int = 64
    objects: int = 2
    min_radius: int = 5  # half the object's side, pixels
    max_radius: int = 8

    @property
    def classes(self) -> int:
        return len(CLASS_NAMES)

    def scenes(self, count: int, seed: int) -> Scenes:
        """``count`` scenes drawn from the generator seeded with ``seed``."""
        if not 1 <= self.objects <= min(self.classes, GRID * GRID):
            raise ValueError(f"a scene holds 1 to {min(self.classes, GRID * GRID)} objects")
        if 2 * self.max_radius + 1 > self.size // GRID:
            raise ValueError(f"objects of radius {self.max_radius} do not fit a grid cell")
        gen = torch.Generator().manual_seed(seed)
        n, o, s = count, self.objects, self.size
        labels = torch.rand(n, self.classes, generator=gen).argsort(dim=1)[:, :o]  # (N, O)
        cells = torch.rand(n, GRID * GRID, generator=gen).argsort(dim=1)[:, :o]  # (N, O)
        radius = torch.randint(self.min_radius, self.max_radius + 1, (n, o), generator=gen)
        cell = s // GRID
        slack = (cell - 2 * radius - 1).float()  # room left for the object's offset in its cell
        offset_y = (torch.rand(n, o, generator=gen) * (slack + 1)).floor().long()
        offset_x = (torch.rand(n, o, generator=gen) * (slack + 1)).floor().long()
        centre_y = (cells // GRID) * cell + radius + offset_y  # (N, O)
        centre_x = (cells % GRID) * cell + radius + offset_x
        shapes = _shape_masks(labels, centre_y, centre_x, radius, s)  # (N, O, S, S) bool

        grey = 0.3 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen)
        pixels = grey + 0.06 * torch.randn(n, 3, s, s, generator=gen)  # (N, 3, S, S)
        jitter = 0.1 * (torch.rand(n, o, 3, generator=gen) - 0.5)
        colours = (COLOURS[labels] + jitter).clamp(0, 1)  # (N, O, 3)
        for k in range(o):
            paint = shapes[:, k, None]  # (N, 1, S, S)
            pixels = torch.where(paint, colours[:, k, :, None, None], pixels)
        pixels = pixels.clamp(0, 1)

        targets = torch.zeros(n, self.classes).scatter_(1, labels, 1.0)  # (N, C)
        return Scenes(pixels, targets, labels, _tight_boxes(shapes))


def _shape_masks(labels: Tensor, cy: Tensor, cx: Tensor, radius: Tensor, size: int) -> Tensor:
    """(N, O, S, S) bool: each object's pixels, its shape chosen by its class."""
    grid = torch.arange(size)
    dy = (grid[:, None] - cy[..., None, None]).float()  # (N, O, S, 1)
    dx = (grid[None, :] - cx[..., None, None]).float()  # (N, O, 1, S)
    r = radius[..., None, None].float()  # (N, O, 1, 1)
    bar = (r / 3).ceil()
    square = (dy.abs() <= r) & (dx.abs() <= r)
    disc = dy**2 + dx**2 <= r**2
    triangle = (dy.abs() <= r) & (dx.abs() <= (dy + r) / 2)
    cross = ((dx.abs() < bar) & (dy.abs() <= r)) | ((dy.abs() < bar) & (dx.abs() <= r))
    every = torch.stack([square, disc, triangle, cross])  # (C, N, O, S, S)
    pick = labels[None, ..., None, None].expand(1, *labels.shape, size, size)
    return every.gather(0, pick)[0]


def _tight_boxes(shapes: Tensor) -> Tensor:
    """(N, O, 4) float boxes x0, y0, x1, y1 (exclusive) around each mask of (N, O, S, S)."""
    size = shapes.shape[-1]
    index = torch.arange(size)
    rows, cols = shapes.any(dim=3), shapes.any(dim=2)  # (N, O, S) each
    big = torch.full_like(index, size)

    def span(occupied: Tensor) -> tuple[Tensor, Tensor]:
        low = torch.where(occupied, index, big).amin(dim=-1)
        high = torch.where(occupied, index, -1).amax(dim=-1) + 1
        return low, high

    y0, y1 = span(rows)
    x0, x1 = span(cols)
    return torch.stack([x0, y0, x1, y1], dim=-1).float()


# -- Model families ---------------------------------------------------------------------------


class SmallCnn(nn.Module):
    """Three conv blocks (16, 32, 64 channels) to a stride-4 map ``features``, then pool and fc."""

    def __init__(self, classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))  # (N, C)


def build_cnn(classes: int, size: int) -> nn.Module:
    """:class:`SmallCnn`; default layer ``features`` (64 x S/4 x S/4)."""
    return SmallCnn(classes)


def build_vit(classes: int, size: int) -> nn.Module:
    """ViT with 8 px patches, 4 blocks of width 64 (4 heads)."""
    return VisionTransformer(
        image_size=size, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128,
        num_classes=classes,
    )  # fmt: skip


def build_swin(classes: int, size: int) -> nn.Module:
    """Swin with 4 px patches, two stages (32 and 64 channels, 2 blocks each), 4 x 4 windows."""
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
        stochastic_depth_prob=0.0, num_classes=classes,
    )  # fmt: skip


def build_convnext(classes: int, size: int) -> nn.Module:
    """ConvNeXt with two stages (32 and 64 channels, 2 blocks each): stride 8."""
    setting = [CNBlockConfig(32, 64, 2), CNBlockConfig(64, None, 2)]
    return ConvNeXt(setting, num_classes=classes)


@dataclass(frozen=True)
class Family:
    """A model family: its builder (classes, image size) -> module, and how to train it."""

    name: str
    build: Callable[[int, int], nn.Module]
    steps: int
    lr: float


FAMILIES = {
    family.name: family
    for family in (
        Family("cnn", build_cnn, steps=300, lr=3e-3),
        Family("vit", build_vit, steps=600, lr=1e-3),
        Family("swin", build_swin, steps=500, lr=1e-3),
        Family("convnext", build_convnext, steps=500, lr=2e-3),
    )
}


@dataclass(frozen=True)
class Training:
    """How a training run ended: the last steps' mean loss, and accuracy on held-out scenes
    (share of the objective's decisions that are right, e.g. of (scene, class) pairs)."""

    loss: float
    accuracy: float


@dataclass(frozen=True)
class Objective:
    """What a model is trained to output: ``loss(logits, scenes)`` and ``correct(logits, scenes)``
    (a bool per decision) for the held-out accuracy."""

    loss: Callable[[Tensor, Scenes], Tensor]
    correct: Callable[[Tensor, Scenes], Tensor]


MULTI_LABEL = Objective(
    lambda logits, s: F.binary_cross_entropy_with_logits(logits, s.targets),
    lambda logits, s: (logits > 0) == s.targets.bool(),
)  # (N, C) logits, a sigmoid per class
SINGLE_LABEL = Objective(
    lambda logits, s: F.cross_entropy(logits, s.labels[:, 0]),
    lambda logits, s: logits.argmax(dim=1) == s.labels[:, 0],
)  # (N, C) logits of a softmax classifier; the scene's first (for one-object tasks: only) object


def present(index: int) -> Objective:
    """One logit (N, 1): is an object of class ``index`` in the scene (a binary model)?"""
    return Objective(
        lambda logits, s: F.binary_cross_entropy_with_logits(logits[:, 0], s.targets[:, index]),
        lambda logits, s: (logits[:, 0] > 0) == s.targets[:, index].bool(),
    )


def train(
    model: nn.Module,
    task: SyntheticTask,
    steps: int,
    *,
    lr: float = 2e-3,
    batch_size: int = 32,
    seed: int = 0,
    objective: Objective = MULTI_LABEL,
) -> Training:
    """Train ``model`` in place on fresh scenes each step (AdamW, one-cycle, ``objective``'s loss:
    by default BCE per class).

    Leaves the model in eval mode and returns how training ended. Seeded: the same model, task,
    steps and seed give the same weights on the same machine and thread count.
    """
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps)
    model.train()
    recent: list[float] = []
    for step in range(steps):
        batch = task.scenes(batch_size, seed=1_000_003 * seed + step)
        loss = objective.loss(model(batch.inputs), batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        recent = [*recent[-19:], loss.item()]
    model.eval()
    held_out = task.scenes(256, seed=-1 - seed)
    with torch.inference_mode():
        correct = objective.correct(model(held_out.inputs), held_out)
    accuracy = float(correct.float().mean())
    return Training(loss=sum(recent) / len(recent), accuracy=accuracy)


def trained(name: str, task: SyntheticTask, seed: int = 0) -> tuple[nn.Module, Training]:
    """A fresh model of family ``name`` (see FAMILIES), seeded, trained with its own settings."""
    family = FAMILIES[name]
    torch.manual_seed(seed)
    model = family.build(task.classes, task.size)
    return model, train(model, task, family.steps, lr=family.lr, seed=seed)


def vit64() -> nn.Module:
    """A factory for ``--model synthetic:vit64``: :func:`build_vit` for the four classes at 64 px
    (random weights; ``--weights`` fills them)."""
    return build_vit(len(CLASS_NAMES), 64)
