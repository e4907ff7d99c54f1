"""Errors the tool reports to users: each renders as one line that says what to do next.

:class:`BadRequest` and its subclasses are about what the user asked for (the CLI exits 2);
every other :class:`ScoreCamError` stops the run or fails one input (exit 1).
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ScoreCamError(Exception):
    """Base class: an error whose message is a complete one-line explanation for the user."""


class BadRequest(ScoreCamError):
    """What the user asked for cannot be done as asked: a name, size, device or option."""


class UnknownModel(BadRequest):
    """The model name is not in torchvision's registry, the embedded models, or importable."""


class UnknownClass(BadRequest):
    """A target class names no output of the model (an unknown name or an index out of range)."""


class UnknownLayer(BadRequest):
    """The layer name does not name a module of the model, or its output is not a map."""


class BadInputSize(BadRequest):
    """The model cannot take the input size (its dry run failed), or the size is out of range."""


class UnsupportedModel(BadRequest):
    """The model cannot be explained as it is: its output is no (N, classes) logits tensor, or its
    factory cannot be called safely."""


class BadModelFile(BadRequest):
    """A model file that cannot be used: missing, not a model, too large, with data outside its
    folder, or without the input and outputs the tool needs."""


class BadDevice(BadRequest):
    """The device is no device torch can name, or none we can compute maps on, or the precision
    asked for makes no sense on it."""


class WeightsError(ScoreCamError):
    """Weights that cannot be had (not in the local cache, no such file or name) or that do not
    fit the model."""


class CheckpointMismatch(BadRequest, WeightsError):
    """A checkpoint that fits the architecture asked for in no way (not even built to its head
    and stem sizes): the CLI exits 2."""


class BadLabels(BadRequest):
    """A ``--labels`` file that cannot be read, parsed, or does not match the model's classes."""


class ImageRead(ScoreCamError):
    """An input file could not be read or decoded as an image."""


class OutputWrite(ScoreCamError):
    """An output file could not be written."""


class BackendUnavailable(ScoreCamError):
    """The inference backend asked for is not installed, or cannot run on this device/precision."""


class BadBoxFile(BadRequest):
    """A box file (``--boxes``) cannot be read at all: missing, too large, not text, no header."""
