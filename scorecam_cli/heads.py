"""Classifier heads: how a model's logits become class scores and probabilities (torch only).

- ``softmax``: the C outputs are competing classes; a class's probability is the softmax across
  them.
- ``sigmoid``: the outputs are independent labels (multi-label); a label's probability is the
  sigmoid of its own logit. A model with **one** output logit z is binary and has two
  explainable classes: 0, the negative class (score -z, probability 1 - sigmoid(z)), and 1, the
  positive class (score z, probability sigmoid(z)).
- ``auto``: sigmoid for a model with one output, softmax otherwise.

Score-CAM's ``softmax`` weighting uses the class scores (raw logits, -z for the negative class),
its ``prob`` weighting and every reported probability use :meth:`Head.probabilities`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scorecam_cli.choices import HEADS
from scorecam_cli.errors import BadRequest

AUTO = "auto"


@dataclass(frozen=True)
class Head:
    """A resolved head: ``kind`` (softmax or sigmoid) for a model of ``outputs`` logits."""

    kind: str
    outputs: int

    @classmethod
    def of(cls, asked: str, outputs: int) -> Head:
        """The head ``asked`` (``auto``, softmax or sigmoid) for a model with ``outputs`` logits.

        A softmax over one output is 1 for every input, so it is refused (BadRequest)."""
        if asked == AUTO:
            return cls("sigmoid" if outputs == 1 else "softmax", outputs)
        if asked not in HEADS:
            raise ValueError(f"head {asked!r} is not one of {AUTO}, {', '.join(HEADS)}")
        if asked == "softmax" and outputs == 1:
            raise BadRequest(
                "--head softmax: the model has one output, whose softmax is 1 for every input; "
                "a one-logit model is binary: use --head sigmoid (its default)"
            )
        return cls(asked, outputs)

    @property
    def binary(self) -> bool:
        """One sigmoid logit: classes 0 (negative) and 1 (positive)."""
        return self.kind == "sigmoid" and self.outputs == 1

    @property
    def classes(self) -> int:
        """Explainable classes: the outputs, or 2 for a binary model."""
        return 2 if self.binary else self.outputs

    def scores(self, logits: Tensor) -> Tensor:
        """Class scores (N, classes) of logits (N, outputs): the logits, or [-z, z] if binary."""
        return torch.cat([-logits, logits], dim=1) if self.binary else logits

    def probabilities(self, scores: Tensor) -> Tensor:
        """Probabilities (N, classes) of class scores (N, classes): softmax across classes, or
        the sigmoid of each (for a binary model: 1 - sigmoid(z) and sigmoid(z))."""
        return scores.sigmoid() if self.kind == "sigmoid" else scores.softmax(dim=1)

    def describe(self) -> str:
        """E.g. ``sigmoid (binary: 0 negative, 1 positive)`` or ``softmax over 5 classes``."""
        if self.binary:
            return "sigmoid (binary: class 0 negative, class 1 positive)"
        if self.kind == "sigmoid":
            return f"sigmoid (multi-label, {self.outputs} labels)"
        return f"softmax over {self.outputs} classes"
