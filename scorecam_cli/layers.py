"""Target layers by name: dotted lookup, the default layer, and a hook that captures one call.

A layer is a module's dotted name from ``named_modules()`` (``layer4``, ``features.29``), optionally
followed by ``:CALL`` when the module runs more than once per forward pass (the embedded model calls
its ``_swish`` activation for the stem and again for the head: ``_swish:0`` and ``_swish:1``).
Without ``:CALL`` the last call is taken.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from scorecam_cli.errors import UnknownLayer


@dataclass(frozen=True)
class LayerRef:
    """A module of a model and which of its calls in one forward pass (None: the last)."""

    name: str
    call: int | None = None

    def __str__(self) -> str:
        return self.name if self.call is None else f"{self.name}:{self.call}"


@dataclass(frozen=True)
class LayerInfo:
    """A layer call seen in a dry run, with its output shape for one image, e.g. (1, 512, 7, 7)."""

    ref: LayerRef
    shape: tuple[int, ...]

    @property
    def is_map(self) -> bool:
        """True for a spatial map (1, K, h, w) with h, w > 1: something Score-CAM can explain."""
        return len(self.shape) == 4 and self.shape[2] > 1 and self.shape[3] > 1


def parse_layer(model: nn.Module, spec: str) -> LayerRef:
    """Turn ``name`` or ``name:CALL`` into a LayerRef; unknown names fail with the closest ones."""
    name, sep, call_text = spec.rpartition(":")
    if not sep or not _is_int(call_text):
        name, call_text = spec, ""
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownLayer(
            f"no layer named {name!r}{hint} (list them with 'scorecam layers MODEL')"
        )
    return LayerRef(name, int(call_text) if call_text else None)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def trace_layers(model: nn.Module, input_size: tuple[int, int]) -> list[LayerInfo]:
    """Every module call of one dry run on a (1, 3, H, W) zero image, in the order calls finish.

    Modules called more than once get a call index in their ref; others get none.
    """
    seen: list[tuple[str, tuple[int, ...]]] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            seen.append((name, shape))

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.inference_mode():
            model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    totals: dict[str, int] = {}
    for name, _ in seen:
        totals[name] = totals.get(name, 0) + 1
    counts: dict[str, int] = {}
    infos = []
    for name, shape in seen:
        call = counts.get(name, 0)
        counts[name] = call + 1
        infos.append(LayerInfo(LayerRef(name, call if totals[name] > 1 else None), shape))
    return infos


def default_layer(model: nn.Module, input_size: tuple[int, int]) -> LayerInfo:
    """The last layer call whose output is a spatial map (1, K, h, w) with h, w > 1."""
    maps = [info for info in trace_layers(model, input_size) if info.is_map]
    if not maps:
        raise UnknownLayer("the model has no layer whose output is a (N, K, h, w) map; use --layer")
    return maps[-1]


def layer_shape(model: nn.Module, ref: LayerRef, input_size: tuple[int, int]) -> tuple[int, ...]:
    """Output shape of the layer call ``ref`` for one image, checked to be a spatial map."""
    calls = [info for info in trace_layers(model, input_size) if info.ref.name == ref.name]
    index = -1 if ref.call is None else ref.call
    if not calls or not -len(calls) <= index < len(calls):
        raise UnknownLayer(f"layer {ref} is not called in a forward pass ({len(calls)} calls)")
    info = calls[index]
    if not info.is_map:
        raise UnknownLayer(f"layer {ref} outputs shape {info.shape}, not a (N, K, h, w) map")
    return info.shape


@dataclass
class Capture:
    """What a capture hook saw: the layer's output (N, K, h, w) from the chosen call."""

    keep_graph: bool = False
    activation: torch.Tensor | None = None
    calls: int = 0
    _recent: list[torch.Tensor] = field(default_factory=list)

    def value(self) -> torch.Tensor:
        """The captured activation (N, K, h, w); fails if the hooked call never ran."""
        if self.activation is None:
            raise UnknownLayer(f"the layer ran {self.calls} time(s); the chosen call never ran")
        return self.activation


@contextmanager
def capture(model: nn.Module, ref: LayerRef, keep_graph: bool = False) -> Iterator[Capture]:
    """Hook ``ref`` for the duration of the block; the hook is always removed on exit.

    With ``keep_graph`` the captured tensor stays in the autograd graph (for gradient methods);
    otherwise it is a detached copy, safe from later in-place ops in the model.
    """
    module = dict(model.named_modules()).get(ref.name)
    if module is None:
        raise UnknownLayer(f"no layer named {ref.name!r}")
    result = Capture(keep_graph=keep_graph)
    wanted = -1 if ref.call is None else ref.call

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            raise UnknownLayer(f"layer {ref} does not output a tensor")
        kept = output if keep_graph else output.detach().clone()
        if wanted >= 0:
            if result.calls == wanted:
                result.activation = kept
        else:
            result._recent = [*result._recent, kept][wanted:]
            result.activation = result._recent[0] if len(result._recent) == -wanted else None
        result.calls += 1

    handle = module.register_forward_hook(hook)
    try:
        yield result
    finally:
        handle.remove()
