"""Target layers by name: dotted lookup, the default layer, and a hook that captures one call.

A layer is a module's dotted name from ``named_modules()`` (``layer4``, ``features.29``), optionally
followed by ``:CALL`` when the module runs more than once per forward pass (the embedded model calls
its ``_swish`` activation for the stem and again for the head: ``_swish:0`` and ``_swish:1``).
Without ``:CALL`` the last call is taken. A resolved layer carries its layout
(:mod:`scorecam_cli.layouts`); the capture hook hands the core the (N, C, h, w) view.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from scorecam_cli.errors import BadInputSize, ScoreCamError, UnknownLayer, first_line
from scorecam_cli.layouts import (
    TOKENS,
    Layout,
    LayoutTracker,
    forced_layout,
    mean_pooled,
    token_hints,
)

_POOLS = (
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool1d,
    nn.MaxPool1d,
    nn.AdaptiveAvgPool1d,
)
_NO_OPS = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)
# Top-level children that hold the classifier head: their maps are class maps, not features.
HEAD_NAMES = frozenset({"classifier", "fc", "head", "heads", "head_drop", "fc_norm", "last_linear"})


@dataclass(frozen=True)
class LayerRef:
    """A module of a model, which of its calls in one forward pass (None: the last), and the
    layout its output is read in (None: as (N, K, h, w))."""

    name: str
    call: int | None = None
    layout: Layout | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return self.name if self.call is None else f"{self.name}:{self.call}"


@dataclass(frozen=True)
class LayerInfo:
    """A layer call seen in a dry run: output shape for one image, e.g. (1, 512, 7, 7), its layout
    (None: no map the tool can read), and why it cannot be a default (``role``, empty if it can)."""

    ref: LayerRef
    shape: tuple[int, ...]
    role: str = ""
    start: int = 0  # dry-run clock when the call started (for the ViT rule)
    end: int = 0  # dry-run clock when it finished

    @property
    def layout(self) -> Layout | None:
        """How the output is read: the ref's layout."""
        return self.ref.layout

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """(C, h, w) of the map view, or None when the output is no map."""
        return None if self.layout is None else self.layout.map_shape(self.shape)

    @property
    def is_map(self) -> bool:
        """True for a map with h, w > 1 in a known layout: something Score-CAM can explain."""
        size = self.map_shape
        return size is not None and size[1] > 1 and size[2] > 1


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


@dataclass
class _Call:
    name: str
    module: nn.Module
    start: int
    shape: tuple[int, ...] = ()
    end: int = -1
    alias_of: int | None = None  # the call whose output tensor this call returned unchanged


def _record_calls(model: nn.Module, input_size: tuple[int, int], channels: int = 3) -> list[_Call]:
    """Every module call of one dry run on a (1, channels, H, W) zero image, in the order calls
    finish."""
    finished: list[_Call] = []
    open_calls: dict[int, list[_Call]] = {}
    clock = [0]  # one tick per call start and per call end
    last: list[object] = [None]

    def before(name: str, module: nn.Module):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object) -> None:
            clock[0] += 1
            open_calls.setdefault(id(module), []).append(_Call(name, module, clock[0]))

        return hook

    def after(module: nn.Module, _inputs: object, output: object) -> None:
        clock[0] += 1
        call = open_calls[id(module)].pop()
        call.shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        call.end = clock[0]
        if finished and output is last[0]:
            call.alias_of = len(finished) - 1
        last[0] = output
        finished.append(call)

    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(before(name, module)))
            handles.append(module.register_forward_hook(after))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.inference_mode():
            model(torch.zeros(1, channels, *input_size, device=device))
    except ScoreCamError:
        raise
    except Exception as exc:
        raise BadInputSize(
            f"the model fails on a {input_size[0]}x{input_size[1]} input ({first_line(exc)}); "
            "give --input-size a size it takes, or leave it out for its native size"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return finished


def trace_layers(
    model: nn.Module,
    input_size: tuple[int, int],
    prefix_tokens: int | None = None,
    channels: int = 3,
) -> list[LayerInfo]:
    """Every module call of one dry run on ``channels`` input channels, in the order calls
    finish, with layouts and roles.

    Modules called more than once get a call index in their ref; others get none.
    """
    calls = _record_calls(model, input_size, channels)
    tracker = LayoutTracker(input_size, token_hints(model, prefix_tokens))
    totals: dict[str, int] = {}
    for call in calls:
        totals[call.name] = totals.get(call.name, 0) + 1
    counts: dict[str, int] = {}
    infos: list[LayerInfo] = []
    for call in calls:
        index = counts.get(call.name, 0)
        counts[call.name] = index + 1
        layout = tracker.classify(call.module, call.shape)
        ref = LayerRef(call.name, index if totals[call.name] > 1 else None, layout)
        infos.append(LayerInfo(ref, call.shape, _role(call, infos), call.start, call.end))
    return infos


def _role(call: _Call, earlier: list[LayerInfo]) -> str:
    """Why a call cannot be the default layer ("" when it can)."""
    if call.name.split(".")[0] in HEAD_NAMES:
        return "head"
    if isinstance(call.module, _POOLS) or "Pool" in type(call.module).__name__:
        return "pooling"
    if isinstance(call.module, _NO_OPS) or type(call.module).__name__ == "Permute":
        return "no-op"
    if call.alias_of is not None and earlier[call.alias_of].role:
        return earlier[call.alias_of].role  # a container returning a pooling layer's output
    return ""


def is_attention(module: nn.Module) -> bool:
    """Self-attention modules (torch's MultiheadAttention, timm's and others' *Attention)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def pick_default(infos: list[LayerInfo], model: nn.Module) -> LayerInfo:
    """The default layer by rule: the last block output of the backbone before global pooling.

    Maps: the last map call that is no pooling, no no-op and not in the classifier head (calls
    finish outer-last, so a block's output wins over its inner branches). Token sequences read
    by a class token (ViT, DeiT, BEiT without mean pooling): the last token output that finishes
    before the last attention call starts, i.e. the last block's first norm (``ln_1``,
    ``layernorm_before``), the tokens the class token attends to. Tokens without prefix tokens
    or mean-pooled into the head (Swin) are maps like any other: the last one.
    """
    candidates = [info for info in infos if info.is_map and not info.role]
    if not candidates:
        raise UnknownLayer("the model has no layer whose output the tool can read as maps")
    tokens = [
        info
        for info in candidates
        if info.layout and info.layout.kind == TOKENS and info.layout.prefix > 0
    ]
    if tokens and not mean_pooled(model):
        modules = dict(model.named_modules())
        starts = [i.start for i in infos if is_attention(modules[i.ref.name])]
        before = [i for i in tokens if starts and i.end < max(starts)]
        return (before or tokens)[-1]
    return candidates[-1]


def resolve_layer(
    model: nn.Module,
    spec: str | None,
    input_size: tuple[int, int],
    layout: str | None = None,
    prefix_tokens: int | None = None,
    channels: int = 3,
) -> LayerInfo:
    """The layer ``spec`` (None: the default by rule) after a dry run at ``input_size`` on
    ``channels`` input channels.

    ``layout`` (nchw, nhwc or tokens; None: decided from the model) overrides how the layer's
    output is read. The returned info's ref carries the layout for :func:`capture`.
    """
    infos = trace_layers(model, input_size, prefix_tokens, channels)
    if spec is None and layout is None:
        return pick_default(infos, model)
    if spec is None:
        raise UnknownLayer("--layout needs --layer: it says how to read that layer's output")
    ref = parse_layer(model, spec)
    calls = [info for info in infos if info.ref.name == ref.name]
    index = -1 if ref.call is None else ref.call
    if not calls or not -len(calls) <= index < len(calls):
        raise UnknownLayer(f"layer {ref} is not called in a forward pass ({len(calls)} calls)")
    info = calls[index]
    if layout is not None:
        forced = forced_layout(layout, info.shape, input_size, token_hints(model, prefix_tokens))
        if forced is None:
            raise UnknownLayer(f"layer {ref} outputs shape {info.shape}, which is no {layout} map")
        info = replace(info, ref=replace(info.ref, layout=forced))
    if not info.is_map:
        raise UnknownLayer(
            f"layer {ref} outputs shape {info.shape}, which the tool cannot read as maps "
            "(N, C, h, w) with h, w > 1; pick another layer or say how with "
            "--layout nchw|nhwc|tokens"
        )
    return info


def default_layer(model: nn.Module, input_size: tuple[int, int]) -> LayerInfo:
    """The default layer by rule (:func:`pick_default`) after a dry run at ``input_size``."""
    return resolve_layer(model, None, input_size)


def layer_shape(model: nn.Module, ref: LayerRef, input_size: tuple[int, int]) -> tuple[int, ...]:
    """Output shape of the layer call ``ref`` for one image, checked to be a readable map."""
    return resolve_layer(model, str(ref), input_size).shape


@dataclass
class Capture:
    """What a capture hook saw: the layer's output as maps (N, K, h, w) from the chosen call."""

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

    The output is turned into its (N, K, h, w) view by ``ref.layout``. With ``keep_graph`` the
    captured tensor stays in the autograd graph (for gradient methods); otherwise it is a detached
    copy, safe from later in-place ops in the model.
    """
    module = dict(model.named_modules()).get(ref.name)
    if module is None:
        raise UnknownLayer(f"no layer named {ref.name!r}")
    result = Capture(keep_graph=keep_graph)
    wanted = -1 if ref.call is None else ref.call
    layout = ref.layout or Layout()

    def hook(_module: nn.Module, _inputs: object, output: object) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            raise UnknownLayer(f"layer {ref} does not output a tensor")
        view = layout.to_nchw(output)  # (N, K, h, w)
        kept = view if keep_graph else view.detach().clone()
        if wanted >= 0:
            if result.calls == wanted:
                result.activation = kept
        else:
            result._recent = [*result._recent, kept][wanted:]
            result.activation = result._recent[0] if len(result._recent) == -wanted else None
        result.calls += 1
        # Gradient methods differentiate with respect to the view: the model must go on from it.
        return layout.from_nchw(view, output) if keep_graph and view is not output else None

    handle = module.register_forward_hook(hook)
    try:
        yield result
    finally:
        handle.remove()
