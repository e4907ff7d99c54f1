"""Factories for ``--model badmodels:NAME``: awkward custom models (tests put this folder on the
path). ``imported_helper`` is imported here but defined elsewhere, so it must never be called."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from os import getcwd as imported_helper  # noqa: F401  (the refusal test names it)

import torch
from conftest import TinyNet
from torch import nn

Outputs = namedtuple("Outputs", ["logits", "aux"])


@dataclass
class HFOutput:
    """Like a Hugging Face ModelOutput: an object with a .logits tensor."""

    logits: torch.Tensor


class Wrapped(nn.Module):
    """TinyNet whose forward returns ``kind`` of output around its logits."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = TinyNet()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> object:
        logits = self.net(x)
        if self.kind == "tuple":
            return logits, logits.detach()
        if self.kind == "namedtuple":
            return Outputs(logits, None)
        if self.kind == "dict":
            return {"logits": logits}
        if self.kind == "object":
            return HFOutput(logits)
        if self.kind == "dict-without-logits":
            return {"scores": logits}
        return logits[:, None, :].expand(-1, 3, -1)  # a 3-D tensor (N, 3, C)


def tuple_output() -> nn.Module:
    return Wrapped("tuple")


def namedtuple_output() -> nn.Module:
    return Wrapped("namedtuple")


def dict_output() -> nn.Module:
    return Wrapped("dict")


def object_output() -> nn.Module:
    return Wrapped("object")


def dict_without_logits() -> nn.Module:
    return Wrapped("dict-without-logits")


def three_d_output() -> nn.Module:
    return Wrapped("3d")


def raises() -> nn.Module:
    raise RuntimeError("cannot build this model")


def needs_arguments(width: int) -> nn.Module:
    return TinyNet(width)


def not_a_module() -> object:
    return "a string"


class ModelClass(TinyNet):
    """An nn.Module class defined here: called without arguments."""
