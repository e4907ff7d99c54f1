"""Model outputs reduced to logits: every loaded model returns a (N, classes) tensor.

Custom and timm models may return a tuple or namedtuple (logits first), a dict with ``logits``, or
an output object with a ``.logits`` tensor (Hugging Face style). A forward hook on the model, set
at load time, replaces such an output by its logits tensor, so the core and the metrics always see
(N, C) logits and layer names stay those of the model. Anything else fails with one line at the
first (dry) run.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from scorecam_cli.errors import UnsupportedModel


def logits_of(output: object) -> Tensor:
    """The (N, C) logits inside a model's ``output``; one-line error when there are none."""
    found: object = output
    if isinstance(output, Mapping):
        found = output.get("logits")
    elif isinstance(output, tuple) and output:
        found = getattr(output, "logits", output[0])  # namedtuple field, else the first item
    elif not isinstance(output, Tensor):
        found = getattr(output, "logits", None)
    if not isinstance(found, Tensor):
        raise UnsupportedModel(
            f"the model returns a {type(output).__name__} without a logits tensor; "
            "scorecam needs (N, classes) logits, a tuple whose first item they are, "
            "a dict with 'logits', or an object with .logits"
        )
    if found.ndim != 2:
        raise UnsupportedModel(
            f"the model's logits have shape {tuple(found.shape)}; scorecam needs (N, classes)"
        )
    return found


def _hook(_module: nn.Module, _inputs: object, output: object) -> Tensor:
    return logits_of(output)


def reduce_to_logits(module: nn.Module) -> nn.Module:
    """Make ``module`` return its logits tensor (N, C) (a forward hook; names unchanged)."""
    module.register_forward_hook(_hook)
    return module
