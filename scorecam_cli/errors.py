"""Errors the tool reports to users: each renders as one line that says what to do next."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ScoreCamError(Exception):
    """Base class: an error whose message is a complete one-line explanation for the user."""


class UnknownModel(ScoreCamError):
    """The model name is not in torchvision's registry, the embedded models, or importable."""


class MissingWeights(ScoreCamError):
    """Named weights are not in the local cache and cannot be downloaded."""


class UnknownLayer(ScoreCamError):
    """The layer name does not name a module of the model, or its output is not a map."""


class ImageRead(ScoreCamError):
    """An input file could not be read or decoded as an image."""


class OutputWrite(ScoreCamError):
    """An output file could not be written."""


class BackendUnavailable(ScoreCamError):
    """The inference backend asked for is not installed, or cannot run on this device/precision."""


class BadInputSize(ScoreCamError):
    """The model cannot take the input size (its dry run failed), or the size is out of range."""


class UnsupportedModel(ScoreCamError):
    """The model cannot be explained as it is: its output is no (N, classes) logits tensor, or its
    factory cannot be called safely."""


class BadBoxFile(ScoreCamError):
    """A box file (``--boxes``) cannot be read at all: missing, too large, not text, no header."""
