"""Model factories for ``--model tinymodels:NAME`` (tests put this folder on PYTHONPATH)."""

from __future__ import annotations

from conftest import TinyNet


def tiny() -> TinyNet:
    """The seeded TinyNet of conftest: 12-channel target layer ``relu`` at 1/4 input size."""
    return TinyNet()


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
