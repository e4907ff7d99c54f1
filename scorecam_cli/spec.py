"""What to explain and how, as one frozen, picklable spec (torch-free).

The CLI builds an :class:`ExplainSpec` once from its options; :func:`scorecam_cli.explainer.
build_explainer` makes the model ready to explain from it, in this process or in a Ray actor.
Variants (another device, method or layer) are ``dataclasses.replace`` of it, never dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from scorecam_cli.choices import HEADS, METHODS, PRECISIONS, WEIGHTINGS

EMBEDDED_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class CamConfig:
    """How to compute the maps; see METHODS, WEIGHTINGS and PRECISIONS for the choices."""

    method: str = "scorecam"
    weighting: str = "softmax"
    batch_size: int | None = None  # masked images per forward pass; None: the backend's default
    precision: str = "fp32"
    share_masks: bool = True  # score identical masked inputs once (exact)
    top_channels: int = 256  # faster-scorecam: channels kept per image, by activation variance
    samples: int = 8  # sscam: noisy copies per mask; iscam: integration steps
    noise_std: float = 2.0  # sscam: std of the Gaussian noise added to each mask
    seed: int = 0  # sscam: noise seed, for repeatable maps
    head: str = "auto"  # softmax | sigmoid | auto (sigmoid for one output): scorecam_cli.heads

    def check(self) -> None:
        """Raise ValueError for a choice the core does not know."""
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting {self.weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.head not in ("auto", *HEADS):
            raise ValueError(f"head {self.head!r} is not one of auto, {', '.join(HEADS)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if self.samples < 1 or self.top_channels < 1:
            raise ValueError("samples and top channels must be at least 1")


@dataclass(frozen=True)
class ModelSpec:
    """Which model: ``--model`` (a source, see :func:`scorecam_cli.models.load_model`) and
    ``--weights``; the user's overrides of what the source knows: ``--labels`` (a class-names
    file), ``--mean`` and ``--std`` (one value, or one per input channel)."""

    source: str = EMBEDDED_MODEL
    weights: str = "DEFAULT"
    labels: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class LayerSpec:
    """Which layer and how to read its output: ``--layer`` (None: the default by rule),
    ``--layout`` (None: decided from the model) and ``--prefix-tokens``."""

    name: str | None = None
    layout: str | None = None
    prefix_tokens: int | None = None


@dataclass(frozen=True)
class ComputeSpec:
    """Where the passes run: ``--device`` (auto: CUDA when present), ``--backend`` for the masked
    passes, and CPU ``--threads`` (None: OMP_NUM_THREADS, else the cores)."""

    device: str = "auto"
    backend: str = "auto"
    threads: int | None = None


@dataclass(frozen=True)
class ExplainSpec:
    """Everything that decides the maps: model, layer, input size (and whether images keep
    their aspect), method, targets, compute.

    ``classes`` are the user's words (indices or names), resolved against the model's class
    names when the explainer is built; with none, the ``top_k`` classes of each image.
    """

    model: ModelSpec = ModelSpec()
    layer: LayerSpec = LayerSpec()
    method: CamConfig = CamConfig()
    compute: ComputeSpec = ComputeSpec()
    input_size: tuple[int, int] | None = None  # (H, W); None: the model's native size
    classes: tuple[str, ...] = ()
    top_k: int = 1
    keep_aspect: bool = False  # --keep-aspect: scorecam_cli.aspect (the model must take it)
