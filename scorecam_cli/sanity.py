"""The sanity check (Adebayo et al. 2018, cascading randomisation): on a deep copy of the model, the
modules with parameters are re-initialised one by one from the output towards the input,
cumulatively; after selected steps the maps are recomputed for the same images and target classes
and compared with the original maps by Spearman rank correlation. A method whose maps depend on
the model must show a falling correlation; maps that survive randomisation explain the image, not
the model.

Per-image correlations (:class:`SanityStep`) stay per image so that a caller can stream images in
batches and average at the end (:func:`merge_sanity`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scorecam_cli.faithfulness import Explain
from scorecam_cli.layers import trace_layers

DEFAULT_SANITY_STEPS = 9  # randomisation steps checked: evenly spaced, the last = fully random


@dataclass(frozen=True, eq=False)
class SanityStep:
    """Maps after re-initialising the top ``randomised`` of ``total`` parameterised modules."""

    module: str  # dotted name of the module re-initialised last ("" for the model itself)
    randomised: int  # modules re-initialised so far, from the output down
    total: int  # modules with parameters (or running statistics) used in a forward pass
    correlations: Tensor  # (N,) Spearman correlation, original vs randomised maps, CPU float64

    @property
    def correlation(self) -> float:
        """Mean Spearman rank correlation over the images (1: unchanged maps, 0: unrelated)."""
        return float(self.correlations.mean())


# -- Sanity check: cascading randomisation --------------------------------------------------------


def spearman(first: Tensor, second: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps (N, ...) -> (N,), float64.

    Ranks are fractional (tied values share their mean rank, as in ``scipy.stats.spearmanr``), then
    the Pearson correlation of the ranks; a constant map has correlation 0 with anything.
    """
    if first.shape != second.shape or first.ndim < 2:
        raise ValueError(
            f"maps must be (N, ...) of one shape: {tuple(first.shape)}, {tuple(second.shape)}"
        )
    a, b = _ranks(first.flatten(1)), _ranks(second.flatten(1))  # (N, P)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    norm = (a.pow(2).sum(dim=1) * b.pow(2).sum(dim=1)).sqrt()  # (N,)
    return torch.where(norm > 0, (a * b).sum(dim=1) / norm.clamp_min(1e-300), 0.0)


def _ranks(values: Tensor) -> Tensor:
    """Fractional 0-based ranks along dim 1 of (N, P): ties get the mean of their positions."""
    values = values.double().contiguous()
    ordered = values.sort(dim=1).values
    below = torch.searchsorted(ordered, values, right=False)  # first position of each value
    upto = torch.searchsorted(ordered, values, right=True)  # one past its last position
    return (below + upto - 1).double() / 2


def randomisation_order(
    model: nn.Module, input_size: tuple[int, int], channels: int = 3
) -> list[str]:
    """Names of the modules to re-initialise, top (output) first.

    The modules that hold parameters of their own (or BatchNorm running statistics) and run in a
    forward pass, in the reverse of the order their first call finishes in a dry run
    (:func:`scorecam_cli.layers.trace_layers`); the model itself ("") comes first if it holds
    parameters directly. Modules that never run cannot change the maps and are left out.
    """
    modules = dict(model.named_modules())
    calls = trace_layers(model, input_size, channels=channels)
    finished = list(dict.fromkeys(info.ref.name for info in calls))
    names = [name for name in finished if _has_state(modules[name])]
    if _has_state(model):
        names.append("")
    return names[::-1]


def sanity_check(
    model: nn.Module,
    images: Tensor,
    explain: Explain,
    *,
    seed: int = 0,
    max_steps: int | None = DEFAULT_SANITY_STEPS,
) -> list[SanityStep]:
    """Cascading randomisation (Adebayo et al. 2018) of a deep copy of ``model``.

    The original maps are ``explain(copy, images)`` (N, H, W). Then the modules of
    :func:`randomisation_order` are re-initialised one by one, cumulatively, from the output
    towards the input; after each of ``max_steps`` evenly spaced steps (always including the
    first and the last, fully randomised one; None: every step) the maps are recomputed and
    compared with the originals by :func:`spearman`. ``explain`` must keep the target classes
    fixed (e.g. :func:`cam_explainer`); the caller's model and global RNG are left untouched.

    Re-initialisation runs under ``torch.manual_seed(seed)`` (set once, before the top module), so
    every call with the same seed builds the same randomised models and batches of images can be
    merged with :func:`merge_sanity`. A module is re-initialised by its ``reset_parameters()``
    (BatchNorm: also ``reset_running_stats()``); a module without one gets each of its own
    parameters redrawn from a normal distribution with that tensor's mean and standard deviation
    (for a constant tensor, its mean absolute value as the deviation).
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError("max steps must be at least 1")
    copied = copy.deepcopy(model)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    order = randomisation_order(copied, size, int(images.shape[1]))
    if not order:
        raise ValueError("the model has no parameters to randomise")
    checked = _checkpoints(len(order), max_steps)
    original = explain(copied, images).detach()  # (N, H, W)
    modules = dict(copied.named_modules())
    steps = []
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        for index, name in enumerate(order, start=1):
            _reinitialise(modules[name])
            if index in checked:
                maps = explain(copied, images).detach()  # (N, H, W)
                correlations = spearman(original, maps).cpu()
                steps.append(SanityStep(name, index, len(order), correlations))
    return steps


def merge_sanity(runs: Iterable[Sequence[SanityStep]]) -> list[SanityStep]:
    """Join the per-image correlations of sanity checks of several batches (same model, seed)."""
    batches = list(runs)
    if not batches:
        raise ValueError("no sanity checks to merge")

    def plan(run: Sequence[SanityStep]) -> list[tuple[str, int]]:
        return [(step.module, step.randomised) for step in run]

    if any(plan(run) != plan(batches[0]) for run in batches):
        raise ValueError("the sanity checks randomised different modules; use the same settings")
    return [
        SanityStep(
            step.module,
            step.randomised,
            step.total,
            torch.cat([run[i].correlations for run in batches]),  # (sum of N,)
        )
        for i, step in enumerate(batches[0])
    ]


def _checkpoints(total: int, max_steps: int | None) -> set[int]:
    """Evenly spaced step numbers in 1 ... total, including both ends; all if max_steps is None."""
    if max_steps is None or max_steps >= total:
        return set(range(1, total + 1))
    if max_steps == 1:
        return {total}
    return {1 + round(i * (total - 1) / (max_steps - 1)) for i in range(max_steps)}


def _has_state(module: nn.Module) -> bool:
    has_params = next(module.parameters(recurse=False), None) is not None
    return has_params or hasattr(module, "reset_running_stats")


@torch.no_grad()
def _reinitialise(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
    else:
        for param in module.parameters(recurse=False):
            spread = param.std() if param.numel() > 1 else torch.zeros_like(param.mean())
            scale = torch.where(spread > 0, spread, param.abs().mean())  # constant: its size
            param.copy_(torch.randn_like(param) * scale + param.mean())
    reset_stats = getattr(module, "reset_running_stats", None)
    if callable(reset_stats):
        reset_stats()


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
