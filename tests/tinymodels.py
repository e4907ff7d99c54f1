"""Model factories for ``--model tinymodels:NAME`` (tests put this folder on PYTHONPATH)."""

from __future__ import annotations

import warnings

import torch
from conftest import TinyNet


def tiny() -> TinyNet:
    """The seeded TinyNet of conftest: 12-channel target layer ``relu`` at 1/4 input size."""
    return TinyNet()


class NanOnBright(TinyNet):
    """TinyNet whose logits are NaN for bright images (mean normalised value above 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)  # (N, 10)
        bright = x.mean(dim=(1, 2, 3)) > 1.0  # (N,)
        return torch.where(bright[:, None], torch.full_like(logits, float("nan")), logits)


def nan_on_bright() -> NanOnBright:
    """For the NaN tests: white images give NaN logits, random ones finite."""
    return NanOnBright()


class Warns(TinyNet):
    """TinyNet that warns, on two lines, at every forward pass (as torch and its kernels do)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("something odd\nsecond line", UserWarning, stacklevel=1)
        return super().forward(x)


def warns() -> Warns:
    """For the warning tests: a Python warning at every forward pass."""
    return Warns()


class Unexportable(TinyNet):
    """TinyNet with a branch on a data-dependent value: ``torch.export`` cannot trace it."""

    def forward(self, x):  # type: ignore[no-untyped-def]
        logits = super().forward(x)
        if x.mean() > 100:  # never true for normalised images; the maps equal TinyNet's
            logits = logits * 2
        return logits


def unexportable() -> Unexportable:
    """A TinyNet that runs in PyTorch but cannot be exported to ONNX."""
    return Unexportable()


def tiny_without_cli() -> TinyNet:
    """The TinyNet, refusing to be built in a process that imported the CLI (Ray actors must
    build their explainers from the library alone)."""
    import sys

    if "scorecam_cli.cli" in sys.modules:
        raise RuntimeError("scorecam_cli.cli is imported in this process")
    return TinyNet()
