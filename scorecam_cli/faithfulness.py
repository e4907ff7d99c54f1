"""How faithful are the maps? Perturbation metrics (the sanity check is in :mod:`.sanity`).

All metrics take a model (a torch module in eval mode, or any callable images (B, 3, H, W) ->
logits (B, C): :data:`Logits`, such as an ONNX file's session), images X (N, 3, H, W) already
normalised with the model's mean/std, saliency maps S (N, H, W) at the images' resolution (e.g.
``upsample_maps(result.maps, (H, W))[:, t]``) and target classes c (N,). A "probability" is
the ``head``'s (:mod:`scorecam_cli.heads`): ``softmax(model(x))[c]``, or with ``sigmoid`` the
sigmoid of class c's own score (a one-logit model's class 0: ``1 - sigmoid(z)``).

- **Average Drop %** (Chattopadhay et al. 2018, as used by Score-CAM, Wang et al. 2020):
  ``100 * mean_i max(0, Y_i - O_i) / Y_i`` with ``Y_i = p(c_i | X_i)`` and
  ``O_i = p(c_i | X_i * E_i)``, where the explanation map ``E_i`` is ``S_i`` min-max normalised to
  [0, 1] and used as a soft mask (a constant map gives ``E_i = 0``; an image with ``Y_i = 0``
  counts as no drop). Lower is better.
- **Increase in Confidence %**: ``100 * mean_i 1[Y_i < O_i]``. Higher is better.
- **Deletion AUC** (RISE, Petsiuk et al. 2018): starting from ``X_i``, pixels are removed in
  order of decreasing saliency (ties: the lower flat index ``y * W + x`` first),
  ``ceil(H * W / steps)`` pixels per step (``steps`` = 32 by default, at most ``H * W``; the last
  step may remove fewer), by setting all channels of a removed pixel to the baseline 0 in
  normalised space (= the dataset's mean colour). ``p(c_i)`` is recorded after each step, from
  step 0 (the intact image) to the image with every pixel removed, and the AUC is the
  trapezoidal area under p against the fraction of pixels removed, in [0, 1]. Lower is better.
- **Insertion AUC** (RISE): the same, starting from a blurred copy of ``X_i`` and putting the
  original pixels back in the same order, up to the intact image; the AUC is against the fraction
  of pixels inserted. The blur is a Gaussian of kernel size 11 and sigma 5 (pixels; weights
  proportional to ``exp(-d**2 / 50)`` for offsets ``d = -5 ... 5``, summing to 1), applied per
  channel as a separable depthwise ``conv2d`` with reflect padding. Higher is better.

Every forward pass goes through :func:`scorecam_cli.cam.map_in_chunks`: perturbed images are built
chunk by chunk on the device (never all N * (steps + 1) at once), ``batch_size`` per pass, under
``torch.inference_mode()`` and the chosen autocast precision, without host syncs in the loop.

Per-image values (:class:`FaithfulnessScores`) stay per image so that a caller can stream images
in batches and average at the end (:func:`summarise`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorecam_cli.cam import (
    CamConfig,
    ScoreBatch,
    auto_batch_size,
    compute_cams,
    map_in_chunks,
    normalise_maps,
    upsample_maps,
)
from scorecam_cli.devices import as_model_input, precision_context
from scorecam_cli.heads import AUTO, Head
from scorecam_cli.layers import LayerRef

DEFAULT_STEPS = 32  # deletion / insertion steps
DELETION_BASELINE = 0.0  # value of a removed pixel, in normalised space: the dataset mean colour
BLUR_KERNEL = 11  # insertion's starting image: Gaussian blur kernel size (pixels, odd)
BLUR_SIGMA = 5.0  # ... and its standard deviation (pixels)

Logits = Callable[[Tensor], Tensor]
"""The model the metrics run: images (B, 3, H, W) -> logits (B, C); an nn.Module is one."""
Explain = Callable[[nn.Module, Tensor], Tensor]
"""``explain(model, images)`` -> saliency maps (N, H, W) for fixed target classes."""


@dataclass(frozen=True, eq=False)
class Curve:
    """A deletion or insertion curve: probabilities (N, S + 1) at ``fractions`` (S + 1,)."""

    fractions: Tensor  # fraction of pixels removed (deletion) or inserted (insertion), 0 ... 1
    probabilities: Tensor  # p(c_i) after each step

    def auc(self) -> Tensor:
        """Trapezoidal area under each image's curve over the fraction in [0, 1]: (N,)."""
        return torch.trapezoid(self.probabilities, x=self.fractions, dim=1)


@dataclass(frozen=True, eq=False)
class FaithfulnessScores:
    """Per-image faithfulness of one batch of N images; :func:`summarise` averages batches."""

    original: Tensor  # Y (N,): p(c | X)
    explained: Tensor  # O (N,): p(c | X * E)
    deletion: Curve
    insertion: Curve

    @property
    def images(self) -> int:
        return int(self.original.shape[0])

    @property
    def average_drop(self) -> Tensor:
        """Per-image drop % (N,); their mean is the Average Drop %."""
        return average_drop(self.original, self.explained)

    @property
    def increase_in_confidence(self) -> Tensor:
        """Per-image 100 or 0 (N,); their mean is the Increase in Confidence %."""
        return increase_in_confidence(self.original, self.explained)

    @property
    def deletion_auc(self) -> Tensor:
        return self.deletion.auc()

    @property
    def insertion_auc(self) -> Tensor:
        return self.insertion.auc()


@dataclass(frozen=True)
class Faithfulness:
    """Means over ``images`` images; see the module docstring for the exact definitions."""

    average_drop: float  # %, lower is better
    increase_in_confidence: float  # %, higher is better
    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better
    images: int


# -- Average Drop and Increase in Confidence ------------------------------------------------------


def explanation_masks(saliency: Tensor) -> Tensor:
    """E (N, H, W): each map min-max normalised to [0, 1]; a constant map gives all zeros."""
    return normalise_maps(saliency.float())


def explained_probabilities(
    model: Logits,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor | Sequence[int],
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
    head: str = AUTO,
) -> tuple[Tensor, Tensor]:
    """Y = p(c | X) and O = p(c | X * E), each (N,), from 2N forward passes."""
    targets = _check_inputs(images, saliency, classes)
    n = images.shape[0]
    masks = explanation_masks(saliency)[:, None]  # (N, 1, H, W)

    def build(start: int, end: int) -> tuple[Tensor, Tensor]:
        item = torch.arange(start, end, device=images.device)  # items [0, N): X, [N, 2N): X * E
        img = item % n
        weight = torch.where((item >= n)[:, None, None, None], masks[img], 1.0)  # (B, 1, H, W)
        return images[img] * weight, targets[img]  # (B, 3, H, W), (B,)

    probs = _probabilities(model, build, 2 * n, images.device, batch_size, precision, head)
    return probs[:n], probs[n:]


def average_drop(original: Tensor, explained: Tensor) -> Tensor:
    """Per-image ``100 * max(0, Y - O) / Y`` (N,); 0 where Y = 0. The mean is Average Drop %."""
    drop = (original - explained).clamp_min(0)
    return 100 * torch.where(original > 0, drop / original.clamp_min(1e-30), 0.0)


def increase_in_confidence(original: Tensor, explained: Tensor) -> Tensor:
    """Per-image ``100 * 1[Y < O]`` (N,). The mean is Increase in Confidence %."""
    return 100 * (original < explained).float()


# -- Deletion and insertion -----------------------------------------------------------------------


def deletion_curve(
    model: Logits,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor | Sequence[int],
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    precision: str = "fp32",
    head: str = AUTO,
) -> Curve:
    """p(c) as the most salient pixels are set to 0 (the mean colour), ``steps`` steps: (N, S+1)."""
    return _perturbation_curve(
        model, images, saliency, classes, None, steps, batch_size, precision, head
    )


def insertion_curve(
    model: Logits,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor | Sequence[int],
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    precision: str = "fp32",
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
    head: str = AUTO,
) -> Curve:
    """p(c) as the most salient pixels are put back into a blurred copy, ``steps`` steps."""
    with torch.inference_mode():
        blurred = gaussian_blur(images.float(), blur_kernel, blur_sigma).to(images.dtype)
    return _perturbation_curve(
        model, images, saliency, classes, blurred, steps, batch_size, precision, head
    )


def removal_fractions(pixels: int, steps: int = DEFAULT_STEPS) -> Tensor:
    """Fraction of pixels changed after each step 0 ... S: (S + 1,), from 0 to 1, for
    S = min(``steps``, ``pixels``)."""
    return _step_counts(pixels, steps, torch.device("cpu")).float() / pixels


def gaussian_blur(
    images: Tensor, kernel_size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA
) -> Tensor:
    """Gaussian blur of images (N, C, H, W), per channel, with reflect padding; same shape.

    Separable: a depthwise ``conv2d`` along x, then along y, with the normalised kernel
    ``exp(-d**2 / (2 * sigma**2))`` for offsets ``d = -(k // 2) ... k // 2``.
    """
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise ValueError("the blur kernel size must be odd and positive, and sigma positive")
    half = kernel_size // 2
    if half >= min(images.shape[-2:]):
        raise ValueError(f"images of {tuple(images.shape[-2:])} pixels are too small to blur")
    channels = images.shape[1]
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - half
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # (k,)
    padded = F.pad(images, (half, half, half, half), mode="reflect")  # (N, C, H+2h, W+2h)
    across = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(across, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _step_counts(pixels: int, steps: int, device: torch.device) -> Tensor:
    """Pixels changed after each step 0 ... S: min(k * ceil(pixels / S), pixels), (S+1,), for
    S = min(steps, pixels): more steps than pixels would only repeat the last image (the AUC is
    the same), at a forward pass each."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    steps = min(steps, pixels)
    per_step = math.ceil(pixels / steps)
    return (torch.arange(steps + 1, device=device) * per_step).clamp_max(pixels)  # (S+1,)


def _perturbation_curve(
    model: Logits,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor | Sequence[int],
    start_images: Tensor | None,
    steps: int,
    batch_size: int | None,
    precision: str,
    head: str = AUTO,
) -> Curve:
    """Deletion (``start_images`` None: from X towards the baseline) or insertion (from
    ``start_images`` towards X) curves, (steps + 1) perturbed images per image built lazily."""
    targets = _check_inputs(images, saliency, classes)
    n, _, h, w = images.shape
    pixels = h * w
    device = images.device
    counts = _step_counts(pixels, steps, device)  # (S+1,)
    order = saliency.flatten(1).argsort(dim=1, descending=True, stable=True)  # (N, H*W)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(pixels, device=device).expand(n, -1)
    )
    per_image = len(counts)  # steps + 1, at most pixels + 1

    def build(start: int, end: int) -> tuple[Tensor, Tensor]:
        item = torch.arange(start, end, device=device)
        img, step = item // per_image, item % per_image  # (B,), (B,)
        changed = (rank[img] < counts[step, None]).view(-1, 1, h, w)  # (B, 1, H, W)
        if start_images is None:
            inputs = images[img].masked_fill(changed, DELETION_BASELINE)
        else:
            inputs = torch.where(changed, images[img], start_images[img])
        return inputs, targets[img]  # (B, 3, H, W), (B,)

    probs = _probabilities(model, build, n * per_image, device, batch_size, precision, head)
    return Curve(counts.float() / pixels, probs.view(n, per_image))


# -- All four together ----------------------------------------------------------------------------


def faithfulness_scores(
    model: Logits,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor | Sequence[int],
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    precision: str = "fp32",
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
    head: str = AUTO,
) -> FaithfulnessScores:
    """Per-image Average Drop, Increase in Confidence, deletion and insertion of one batch.

    Costs N * (2 * min(steps, H * W) + 4) forward passes. Nothing leaves the device until
    :func:`summarise`.
    """
    original, explained = explained_probabilities(
        model, images, saliency, classes, batch_size=batch_size, precision=precision, head=head
    )
    deletion = deletion_curve(
        model,
        images,
        saliency,
        classes,
        steps=steps,
        batch_size=batch_size,
        precision=precision,
        head=head,
    )
    insertion = insertion_curve(
        model,
        images,
        saliency,
        classes,
        steps=steps,
        batch_size=batch_size,
        precision=precision,
        blur_kernel=blur_kernel,
        blur_sigma=blur_sigma,
        head=head,
    )
    return FaithfulnessScores(original, explained, deletion, insertion)


def summarise(batches: Iterable[FaithfulnessScores]) -> Faithfulness:
    """Means over all images of all batches (each image counts once)."""
    parts = list(batches)
    if not parts or sum(part.images for part in parts) == 0:
        raise ValueError("no images to summarise")

    def mean(values: Iterable[Tensor]) -> float:
        return float(torch.cat([v.detach().double().cpu() for v in values]).mean())

    return Faithfulness(
        average_drop=mean(p.average_drop for p in parts),
        increase_in_confidence=mean(p.increase_in_confidence for p in parts),
        deletion_auc=mean(p.deletion_auc for p in parts),
        insertion_auc=mean(p.insertion_auc for p in parts),
        images=sum(part.images for part in parts),
    )


def faithfulness(
    model: Logits,
    images: Tensor,
    saliency: Tensor,
    classes: Tensor | Sequence[int],
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int | None = None,
    precision: str = "fp32",
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
    head: str = AUTO,
) -> Faithfulness:
    """The four metrics averaged over one batch: ``summarise([faithfulness_scores(...)])``."""
    scores = faithfulness_scores(
        model,
        images,
        saliency,
        classes,
        steps=steps,
        batch_size=batch_size,
        precision=precision,
        blur_kernel=blur_kernel,
        blur_sigma=blur_sigma,
        head=head,
    )
    return summarise([scores])


# -- Shared forward-pass loop ---------------------------------------------------------------------


def _check_inputs(images: Tensor, saliency: Tensor, classes: Tensor | Sequence[int]) -> Tensor:
    """Validate shapes; return the classes as a (N,) long tensor on the images' device."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), not {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(saliency.shape) != (n, h, w):
        raise ValueError(f"saliency maps {tuple(saliency.shape)} do not fit images {(n, h, w)}")
    targets = torch.as_tensor(classes, dtype=torch.long, device=images.device).reshape(-1)
    if targets.shape[0] != n:
        raise ValueError(f"{targets.shape[0]} target classes for {n} images")
    if n == 0:
        raise ValueError("no images to evaluate")
    if int(targets.min()) < 0:  # the model's class count is checked by its first forward pass
        raise ValueError("target classes must not be negative")
    return targets


def _probabilities(
    model: Logits,
    build: Callable[[int, int], tuple[Tensor, Tensor]],
    count: int,
    device: torch.device,
    batch_size: int | None,
    precision: str,
    head: str = AUTO,
) -> Tensor:
    """p(target) (count,) float32 for the inputs ``build(start, end)`` -> (inputs, targets),
    the ``head``'s probability."""
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch size must be at least 1")

    def score(start: int, end: int) -> Tensor:
        inputs, targets = build(start, end)  # (B, 3, H, W), (B,)
        logits = model(as_model_input(inputs)).float()  # (B, C)
        resolved = Head.of(head, logits.shape[1])
        probs = resolved.probabilities(resolved.scores(logits))  # (B, classes)
        return probs.gather(1, targets[:, None])[:, 0]  # (B,)

    chunk = batch_size or auto_batch_size(device)
    with torch.inference_mode(), precision_context(device, precision):
        return map_in_chunks(score, count, chunk, device)


def cam_explainer(
    layer: LayerRef | str,
    classes: Tensor | Sequence[int],
    config: CamConfig | None = None,
    backend: tuple[nn.Module, ScoreBatch] | None = None,
) -> Explain:
    """An ``explain(model, images)`` giving ``compute_cams`` maps (N, H, W) for fixed classes (N,).

    The maps are upsampled to the images' size; use it with :func:`.sanity.sanity_check`.
    ``backend`` (model, score_batch) runs the masked passes of that model only; any other model
    (the sanity check's randomised copies) runs its own in PyTorch.
    """

    def explain(model: nn.Module, images: Tensor) -> Tensor:
        targets = torch.as_tensor(classes, dtype=torch.long, device=images.device)
        score = backend[1] if backend is not None and backend[0] is model else None
        result = compute_cams(
            model, layer, images, targets.reshape(-1, 1), config=config, score_batch=score
        )
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return upsample_maps(result.maps, size)[:, 0]  # (N, H, W)

    return explain
