"""Checkpoint files: the state dict inside them, and registry architectures built to fit it.

Reading (:func:`read_state_dict`): ``.safetensors`` files with the safetensors package, any other
file with ``torch.load(weights_only=True)``; a file holding Python objects is refused, never
unpickled. Training scripts wrap the state dict: the first of WRAPPER_KEYS that holds a dict is
taken (and said on stderr), and the key prefixes of ``nn.DataParallel`` (``module.``) and
Lightning (``model.``) are stripped when every key has them, ``torch.compile``'s ``_orig_mod.``
wherever it is a path segment.

Fitting (:func:`fit_architecture`): the architecture is first built as by default on the meta
device (no memory) and compared with the checkpoint. Entries whose first dimension is the default
class count and differ only there are the head: their rows give ``num_classes``; a 4-D weight
that differs only in taking other than 3 input channels is the stem: it gives ``in_chans``. The
architecture is then built with those, and what still does not fit is one line naming an entry
and both its shapes (:class:`~scorecam_cli.errors.CheckpointMismatch`, exit 2).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from scorecam_cli.errors import CheckpointMismatch, WeightsError

log = logging.getLogger("scorecam_cli")

WRAPPER_KEYS = ("state_dict_ema", "state_dict", "model_state_dict", "model")  # first one wins
WHOLE_PREFIXES = ("module.", "model.")  # stripped when every key has one
DEFAULT_CLASSES = 1000  # what registry architectures are built for by default (ImageNet)
COMPILED = "_orig_mod"  # torch.compile's wrapper: a path segment, dropped wherever it is
StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class Fit:
    """How to build an architecture for a checkpoint: None keeps the architecture's default."""

    num_classes: int | None = None  # from the head's rows
    in_chans: int | None = None  # from the stem's input channels
    stem: str | None = None  # the stem convolution's module name (with ``in_chans``)

    def describe(self) -> str:
        """E.g. ``5 classes, 1 input channel`` (empty for the default build)."""
        parts = []
        if self.num_classes is not None:
            parts.append(f"{self.num_classes} class{'es' if self.num_classes != 1 else ''}")
        if self.in_chans is not None:
            parts.append(f"{self.in_chans} input channel{'s' if self.in_chans != 1 else ''}")
        return ", ".join(parts)


# Builds an architecture (in eval mode or not) for a Fit; called once on the meta device.
Build = Callable[[Fit], nn.Module]


def read_state_dict(path: str) -> StateDict:
    """The state dict in checkpoint file ``path``, unwrapped and with prefixes stripped."""
    file = Path(path)
    if file.is_dir():
        raise WeightsError(f"weights file {path} is a folder; give the state-dict file in it")
    if not file.exists():
        raise WeightsError(f"weights file {path} does not exist")
    if not file.is_file():
        raise WeightsError(f"weights file {path} is not a regular file")
    raw = _read_safetensors(file) if file.suffix == ".safetensors" else _read_torch(file)
    return _strip_prefixes(_unwrap(raw, path), path)


def _read_torch(file: Path) -> object:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{file}: refused: it holds Python objects, not only tensors (loading it could run "
            "code); save a plain state dict with torch.save(model.state_dict(), FILE)"
        ) from None
    except Exception as exc:
        raise WeightsError(f"{file}: not a loadable state dict ({load_error_line(exc)})") from exc


def _read_safetensors(file: Path) -> object:
    from safetensors.torch import load_file

    try:
        return load_file(file, device="cpu")
    except Exception as exc:
        raise WeightsError(
            f"{file}: not a readable safetensors file ({load_error_line(exc)})"
        ) from exc


def _unwrap(raw: object, path: str) -> StateDict:
    """The state dict itself: ``raw``, or what a training script wrapped it in."""
    found = raw
    while isinstance(found, Mapping) and not _all_tensors(found):
        present = [key for key in WRAPPER_KEYS if isinstance(found.get(key), Mapping)]
        if not present:
            break
        others = f" (also there: {', '.join(present[1:])})" if present[1:] else ""
        log.info("%s: took the state dict under %r%s", path, present[0], others)
        found = found[present[0]]
    if not isinstance(found, Mapping):
        raise WeightsError(f"{path}: holds a {type(found).__name__}, not a state dict")
    odd = next(((k, v) for k, v in found.items() if not isinstance(k, str) or not _tensor(v)), None)
    if odd is not None:
        keys = ", ".join(str(k) for k in list(found)[:6])
        raise WeightsError(
            f"{path}: not a state dict: {odd[0]!r} holds a {type(odd[1]).__name__}, not a tensor "
            f"(keys: {keys}{', ...' if len(found) > 6 else ''}); a wrapped one is taken from "
            f"{', '.join(WRAPPER_KEYS)}"
        )
    if not found:
        raise WeightsError(f"{path}: holds no tensors")
    return found  # type: ignore[return-value]  # keeps its _metadata (module versions)


def _tensor(value: object) -> bool:
    return isinstance(value, Tensor)


def _all_tensors(mapping: Mapping[object, object]) -> bool:
    return bool(mapping) and all(_tensor(v) for v in mapping.values())


def _strip_prefixes(state: StateDict, path: str) -> StateDict:
    """Drop ``_orig_mod.`` path segments, then ``module.`` / ``model.`` while every key has one."""
    stripped = []
    if any(COMPILED in key.split(".") for key in state):
        consume_prefix_in_state_dict_if_present(state, COMPILED + ".")
        for key in [k for k in state if COMPILED in k.split(".")]:
            state[".".join(p for p in key.split(".") if p != COMPILED)] = state.pop(key)
        stripped.append(COMPILED + ".")
    while prefix := next((p for p in WHOLE_PREFIXES if all(k.startswith(p) for k in state)), ""):
        consume_prefix_in_state_dict_if_present(state, prefix)
        stripped.append(prefix)
    if stripped:
        log.info("%s: stripped the key prefix %s", path, " and ".join(stripped))
    return state


def fit_architecture(name: str, build: Build, state: StateDict, path: str) -> tuple[nn.Module, Fit]:
    """Architecture ``name`` built by ``build`` to fit ``state``, with the state loaded.

    The default class count is the default build's ``num_classes`` (timm), else DEFAULT_CLASSES
    (torchvision's builders and the embedded model's).
    """
    fit = plan_fit(build, state)
    module = build(fit)
    load_checked(
        module, state, path, f"{name} built with {fit.describe()}" if fit != Fit() else name
    )
    if fit != Fit():
        log.info("%s: built %s with %s, to fit the checkpoint", path, name, fit.describe())
    return module, fit


def replace_stem(module: nn.Module, name: str, in_chans: int) -> None:
    """Replace convolution ``name`` of ``module`` by one taking ``in_chans`` input channels
    (otherwise alike, freshly initialised: the checkpoint fills it)."""
    conv = module.get_submodule(name)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise CheckpointMismatch(
            f"{name} is no plain convolution; cannot give it {in_chans} inputs"
        )
    stem = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, stem)


def fit_of(build: Build, state: StateDict) -> Fit | None:
    """The Fit under which ``build``'s architecture takes ``state`` (checked on the meta device,
    nothing is loaded), or None when it takes it in no way or cannot be built there."""
    try:
        fit = plan_fit(build, state, meta_only=True)
        with torch.device("meta"):
            built = build(fit)
    except Exception:
        return None
    return None if _problems(built, state) else fit


def plan_fit(build: Build, state: StateDict, meta_only: bool = False) -> Fit:
    """The Fit that makes ``build``'s architecture take ``state``, from its default build (on
    the meta device; on the CPU for builders that compute with tensors, RegNet's widths, unless
    ``meta_only``)."""
    try:
        with torch.device("meta"):
            probe = build(Fit())
    except Exception:
        if meta_only:
            raise
        probe = build(Fit())
    expected = {key: tuple(value.shape) for key, value in probe.state_dict().items()}
    return fit_shapes(expected, state, getattr(probe, "num_classes", DEFAULT_CLASSES))


def fit_shapes(
    expected: Mapping[str, tuple[int, ...]], state: StateDict, default_classes: int
) -> Fit:
    """The Fit that makes an architecture with entry shapes ``expected`` take ``state``."""
    classes: set[int] = set()
    stem: tuple[str, int] | None = None
    for key, tensor in state.items():
        want, got = expected.get(key), tuple(tensor.shape)
        if want is None or want == got or len(want) != len(got) or not want:
            continue
        if want[0] == default_classes and got[1:] == want[1:]:
            classes.add(got[0])
        elif len(want) == 4 and want[1] == 3 and (got[0], *got[2:]) == (want[0], *want[2:]):
            stem = stem or (key.rpartition(".")[0], got[1])
    return Fit(
        num_classes=classes.pop() if len(classes) == 1 else None,
        in_chans=stem[1] if stem else None,
        stem=stem[0] if stem else None,
    )


def load_checked(module: nn.Module, state: StateDict, path: str, what: str = "the model") -> None:
    """Load ``state`` into ``module``; one line naming the keys or shapes that do not fit."""
    problems = _problems(module, state)
    if problems:
        raise CheckpointMismatch(f"{path}: does not fit {what} ({'; '.join(problems)})")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointMismatch(f"{path}: does not fit {what} ({load_error_line(exc)})") from exc


def _problems(module: nn.Module, state: StateDict) -> list[str]:
    """What keeps ``state`` from loading into ``module``: missing and unexpected keys, and the
    first entry whose shapes differ (with both shapes); empty when it fits."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    problems = [
        f"{len(keys)} {kind} key(s): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for kind, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    if wrong:
        key = wrong[0]
        more = f" (and {len(wrong) - 1} more entries)" if len(wrong) > 1 else ""
        problems.append(
            f"{key} is {_shape(state[key])} in the checkpoint, {_shape(expected[key])} in the "
            f"model{more}"
        )
    return problems


def load_state_dict_file(module: nn.Module, path: str) -> None:
    """Load the checkpoint file ``path`` into ``module`` as it is (no architecture fitting)."""
    load_checked(module, read_state_dict(path), path)


def _shape(tensor: Tensor) -> str:
    return "(" + ", ".join(str(v) for v in tensor.shape) + ")"


def load_error_line(exc: BaseException) -> str:
    """The first line of a loading error, without torch's advice to load with weights_only=False."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    kept = [
        line
        for line in lines
        if "weights_only" not in line
        and "pickle" not in line.lower()
        and not line.startswith("Error(s) in loading")
    ]
    return (kept or [type(exc).__name__])[0]
