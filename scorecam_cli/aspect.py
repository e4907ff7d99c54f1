"""``--keep-aspect``: images keep their aspect instead of being squashed to the square input size.

The short side is resized to the input size's short side; the long side follows, rounded to a
whole number of the layer's strides past the short side, and capped at :data:`MAX_ASPECT` times
the short side. Only models that take other sizes qualify: the explainer is refused (one line)
when the layer reads tokens (a ViT's fixed position embeddings), when the model is an ONNX file
or runs in an exported backend (both fixed-size), or when a dry run at the widest and tallest
sizes fails. Inputs are grouped by their resized size (read from the image header) so that a
batch holds images of one size; :func:`same_size_groups` splits what the header got wrong
(a JPEG turned by its EXIF orientation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from scorecam_cli.errors import BadInputSize
from scorecam_cli.file_limits import header_size_of
from scorecam_cli.images import InputImage, LoadedImage
from scorecam_cli.spec import ExplainSpec

if TYPE_CHECKING:
    from scorecam_cli.layers import LayerInfo
    from scorecam_cli.models import LoadedModel

MAX_ASPECT = 2.0  # the long side is at most this many times the short side
DEFAULT_STRIDE = 32  # when the layer's map does not tell


@dataclass(frozen=True)
class AspectResize:
    """The size an image of (H0, W0) pixels is resized to: its short side becomes ``short``, its
    long side ``short + k * stride`` (k rounded, at most ``MAX_ASPECT * short``)."""

    short: int
    stride: int = DEFAULT_STRIDE

    @property
    def longest(self) -> int:
        """The capped long side: the short side plus as many whole strides as the cap allows."""
        return self.short + self.stride * math.floor((MAX_ASPECT - 1) * self.short / self.stride)

    @property
    def square(self) -> tuple[int, int]:
        return (self.short, self.short)

    def __call__(self, original: tuple[int, int]) -> tuple[int, int]:
        """(H0, W0) -> (H, W) for the model."""
        height, width = original
        if min(height, width) < 1:
            return self.square
        exact = max(height, width) * self.short / min(height, width)  # aspect kept exactly
        strides = math.floor((exact - self.short) / self.stride + 0.5)
        long_side = min(self.short + self.stride * strides, self.longest)
        return (long_side, self.short) if height > width else (self.short, long_side)


def aspect_spec(spec: ExplainSpec) -> ExplainSpec:
    """``spec`` ready for ``--keep-aspect``: the masked passes in PyTorch (``--backend auto``);
    BadInputSize (one line) for an ONNX file or a named exported backend, both fixed-size."""
    from scorecam_cli.models.sources import is_onnx

    if not spec.keep_aspect:
        return spec
    if is_onnx(spec.model.source):
        raise BadInputSize("--keep-aspect: an ONNX file takes one input size; leave it out")
    if spec.compute.backend not in ("auto", "torch"):
        raise BadInputSize(
            f"--keep-aspect: backend {spec.compute.backend} runs one input size; "
            "use --backend torch (or auto)"
        )
    return replace(spec, compute=replace(spec.compute, backend="torch"))


def aspect_resize(loaded: LoadedModel, info: LayerInfo, size: tuple[int, int]) -> AspectResize:
    """The resize rule of ``loaded`` whose layer ``info`` was found by a dry run at ``size``: the
    stride is the input's height over the map's (32 when unknown). BadInputSize (one line) when
    the model cannot take other sizes: a tokens layer, or a dry run that fails at the widest
    or the tallest size."""
    from scorecam_cli.layers import resolve_layer
    from scorecam_cli.layouts import TOKENS

    module, channels = loaded.torch_module(), loaded.preprocessing.channels
    layout = info.layout
    if layout is None or layout.kind == TOKENS:
        raise BadInputSize(
            f"--keep-aspect: layer {info.ref} is a token sequence (a ViT-style model): its "
            f"position embeddings fix the input at {size[0]}x{size[1]}; leave --keep-aspect out"
        )
    grid = info.map_shape
    stride = max(1, round(size[0] / grid[1])) if grid and grid[1] > 0 else DEFAULT_STRIDE
    resize = AspectResize(min(size), stride)
    for trial in ((resize.short, resize.longest), (resize.longest, resize.short)):
        try:
            resolve_layer(module, str(info.ref), trial, layout.kind, channels=channels)
        except BadInputSize as exc:
            reason = str(exc).split(" (", 1)[-1].split("); ", 1)[0]
            raise BadInputSize(
                f"--keep-aspect: the model fails on a {trial[0]}x{trial[1]} input ({reason}); "
                "it takes one input size only: leave --keep-aspect out"
            ) from None
    return resize


def expected_size(item: InputImage, resize: AspectResize) -> tuple[int, int] | None:
    """The resized size of ``item`` from its header (None when unknown: it will fail to decode,
    or its header is unread)."""
    if item.problem is not None:
        return None
    original = header_size_of(item.path)
    return resize(original) if original is not None else None


def grouped_inputs(
    inputs: Iterable[InputImage], resize: AspectResize, batch_size: int
) -> Iterator[InputImage]:
    """``inputs`` reordered so that images of one resized size come ``batch_size`` together:
    a size's run is released when it is full, the rest at the end (by size). The order is that
    of the inputs within a size, so it is the same on every run; at most ``batch_size - 1``
    paths (never images) wait per size, and the sizes are few (the cap bounds them)."""
    pending: dict[tuple[int, int] | None, list[InputImage]] = {}
    for item in inputs:
        size = expected_size(item, resize)
        group = pending.setdefault(size, [])
        group.append(item)
        if len(group) >= batch_size:
            yield from pending.pop(size)
    for size in sorted(pending, key=lambda s: (s is None, s or (0, 0))):
        yield from pending[size]


def same_size_groups(images: list[LoadedImage]) -> list[list[LoadedImage]]:
    """Decoded ``images`` split into lists of one tensor size each, in first-seen order."""
    groups: dict[tuple[int, ...], list[LoadedImage]] = {}
    for image in images:
        shape = tuple(image.tensor.shape) if image.tensor is not None else ()
        groups.setdefault(shape, []).append(image)
    return list(groups.values())


def input_size_of(image: LoadedImage, default: tuple[int, int]) -> tuple[int, int]:
    """(H, W) the model saw ``image`` at: its tensor's (``default`` when it has none)."""
    if image.tensor is None:
        return default
    return (int(image.tensor.shape[-2]), int(image.tensor.shape[-1]))
