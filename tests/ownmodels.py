"""Factories of "your own" models for ``--model ownmodels:NAME`` (tests put this folder on
PYTHONPATH): one-logit binary, multi-label, grayscale, and models that return their input's
channel means (to see the normalisation they are fed)."""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    """conv (the target layer ``relu``, 8 channels) -> pool -> linear to ``outputs`` logits;
    seeded, ``channels`` input channels."""

    def __init__(self, outputs: int, channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(channels, 8, 5, stride=4, padding=2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, outputs)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))  # (N, outputs)


class ChannelMeans(nn.Module):
    """Logits = the mean of each input channel (N, C): what the model is fed, made visible.
    A 1x1 convolution runs too, for a layer to explain; it does not change the logits."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.conv(x)  # (N, 2, H, W)
        return x.mean(dim=(2, 3)) + 0.0 * maps.mean(dim=(1, 2, 3))[:, None]  # (N, C)


def binary() -> SmallNet:
    """One output logit: a binary classifier."""
    return SmallNet(1)


def multilabel() -> SmallNet:
    """Five independent labels (sigmoid head)."""
    return SmallNet(5, seed=1)


def gray() -> SmallNet:
    """Three classes on grayscale images (a 1-channel stem)."""
    return SmallNet(3, channels=1, seed=2)


def channel_means() -> ChannelMeans:
    return ChannelMeans(3)


def gray_means() -> ChannelMeans:
    return ChannelMeans(1)
