"""The batched Score-CAM core and its variants: tensors in, tensors out (torch only).

Exact Score-CAM (Wang et al., CVPRW 2020) for images X (N, 3, H, W) and a layer with activations
A (N, K, h, w): each channel k is upsampled to (H, W), min-max normalised into a mask M_k, and the
model scores X * M_k. The weights w_k come from those scores and the map is ReLU(sum_k w_k A_k).

Speed without approximation:
- masked inputs are built chunk by chunk on the device from (image, channel) pairs of the whole
  batch, ``batch_size`` masked images per forward pass, so memory is bounded by the chunk;
- identical masks are scored once: every constant channel has the all-zero mask (one pass for the
  whole batch), and channels whose maps are equal after min-max normalisation share one pass;
- every pass returns all logits, so all target classes of an image come from the same passes;
- no host syncs inside the loop; hooks only during the first, plain forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorecam_cli.choices import GRADIENT_METHODS
from scorecam_cli.devices import as_model_input, precision_context, single_torch_thread
from scorecam_cli.errors import UnsupportedModel
from scorecam_cli.heads import Head
from scorecam_cli.layers import LayerRef, capture, parse_layer
from scorecam_cli.spec import CamConfig

__all__ = ["CamConfig", "CamResult", "FirstPass", "ScoreBatch", "compute_cams", "score_cams"]

# Masked images per eager forward pass when none is given. CPU: benchmarks/sweep.py on 2 cores
# (results/sweep-cpu.json, the embedded model: 8.9 s at 4 against 9.6-16.2 s at 2, 8 and 16;
# eager passes allocate fresh activations, and big ones page-fault). CUDA: not measured yet (no
# GPU lent); out-of-memory halves it.
AUTO_BATCH_SIZE = {"cpu": 4, "cuda": 128}
# A channel whose range (max - min) is at most RANGE_RTOL of its magnitude max(|min|, |max|) is
# constant and gets the all-zero mask. Relative, because Score-CAM's masks are scale-invariant:
# activations scaled by 1e-9 give the same masks, maps and passes.
RANGE_RTOL = 1e-6
MASK_LEVELS = 2**20  # masks equal at this resolution share a forward pass
# Masked images (B, 3, H, W) -> logits (B, C); synchronous, keeping no reference to the images
# (the core writes every chunk into one buffer).
ScoreBatch = Callable[[Tensor], Tensor]
# The first, plain pass: images (N, 3, H, W) -> logits (N, C) and the layer's activations
# (N, K, h, w). A torch module gives it through the capture hook (:func:`torch_first_pass`); a
# model that is no torch module (an ONNX session) gives it with the layer as a graph output.
FirstPass = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class CamResult:
    """Maps and targets of a batch: maps (N, T, h, w) raw float32, the rest (N, T).

    ``probabilities`` are the head's (:mod:`scorecam_cli.heads`), ``logits`` the class scores
    (the logits; -z for a binary model's negative class)."""

    maps: Tensor
    classes: Tensor
    probabilities: Tensor
    logits: Tensor
    forward_passes: int  # masked images run through the model, the shared zero mask included
    forward_passes_saved: int  # masked images not run because an identical one was scored
    image_passes: Tensor  # (N,) masked images run for each image's own masks
    image_passes_saved: Tensor  # (N,) its masked images not run (shared or zero masks)

    @property
    def layer_size(self) -> tuple[int, int]:
        return int(self.maps.shape[-2]), int(self.maps.shape[-1])


def compute_cams(
    model: nn.Module,
    layer: LayerRef | str,
    images: Tensor,
    classes: Tensor | Sequence[int] | None = None,
    top_k: int = 1,
    config: CamConfig | None = None,
    score_batch: ScoreBatch | None = None,
) -> CamResult:
    """Class activation maps of ``images`` (N, 3, H, W) at ``layer`` for T classes per image.

    ``classes`` is None (the top ``top_k`` classes), a sequence of T class indices for every
    image, or an (N, T) tensor. The model must be in eval mode on the images' device. Returns raw
    maps (N, T, h, w) at the layer's resolution; upsample them with :func:`upsample_maps`.
    ``score_batch`` runs the masked passes, images (B, 3, H, W) -> logits (B, C) on the images'
    device (e.g. an exported copy of the model, :mod:`scorecam_cli.backends`); None: ``model``.
    On the CPU torch itself runs on one thread while such a ``score_batch`` runs the passes.
    The Score-CAM methods run :func:`score_cams` with the model's first pass.
    """
    config = config or CamConfig()
    config.check()
    ref = parse_layer(model, layer) if isinstance(layer, str) else layer
    if config.method in GRADIENT_METHODS:
        return _gradient_cams(model, ref, images, classes, top_k, config)
    own_passes = score_batch is None
    score = torch_score_batch(model) if score_batch is None else score_batch
    return score_cams(
        torch_first_pass(model, ref), score, images, classes, top_k, config, not own_passes
    )


def score_cams(
    first_pass: FirstPass,
    score_batch: ScoreBatch,
    images: Tensor,
    classes: Tensor | Sequence[int] | None = None,
    top_k: int = 1,
    config: CamConfig | None = None,
    separate_backend: bool = False,
) -> CamResult:
    """Score-CAM maps (N, T, h, w) of ``images`` (N, 3, H, W) from the two passes it needs.

    ``first_pass`` gives the logits and the layer's activations, ``score_batch`` the logits of
    masked images; neither needs to be a torch module. ``separate_backend``: the masked passes
    run outside torch (an exported backend), so on the CPU torch drops to one thread meanwhile.
    Classes and top_k as in :func:`compute_cams`; the gradient methods need :func:`compute_cams`.
    """
    config = config or CamConfig()
    config.check()
    if config.method in GRADIENT_METHODS:
        raise ValueError(f"{config.method} needs gradients: use compute_cams with a torch model")
    with torch.inference_mode(), precision_context(images.device, config.precision):
        logits, acts = first_pass(images)  # (N, C), (N, K, h, w)
        head = Head.of(config.head, logits.shape[1])
        logits, acts = _rows(logits, len(images)).float(), _rows(acts, len(images)).float()
        class_scores = head.scores(logits)  # (N, classes)
        targets = _targets(class_scores, classes, top_k)  # (N, T)
        with single_torch_thread(separate_backend and images.device.type == "cpu"):
            scores, chosen, counts = _channel_scores(
                score_batch, images, acts, targets, config, head
            )
        weights = _weights(scores, chosen, config.weighting)  # (N, K, T)
        maps = torch.einsum("nkt,nkhw->nthw", weights, acts).relu()  # (N, T, h, w)
    return _result(maps, targets, class_scores, counts, head)


def torch_first_pass(model: nn.Module, ref: LayerRef) -> FirstPass:
    """The first pass of a torch ``model``: its logits and ``ref``'s activations (capture hook,
    on only during this pass)."""

    def first_pass(images: Tensor) -> tuple[Tensor, Tensor]:
        with capture(model, ref) as seen:
            logits = model(as_model_input(images))  # (N, C)
        return logits, seen.value()  # (N, C), (N, K, h, w)

    return first_pass


def torch_score_batch(model: nn.Module) -> ScoreBatch:
    """The masked passes of a torch ``model`` itself: images (B, 3, H, W) -> logits (B, C)."""
    return lambda batch: model(as_model_input(batch))


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (align_corners=False) resize of maps (N, T, h, w) to (N, T, H, W)."""
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def is_constant(low: Tensor, high: Tensor) -> Tensor:
    """Whether ranges [low, high] (any shape) are constant: at most RANGE_RTOL of the magnitude."""
    return (high - low) <= RANGE_RTOL * torch.maximum(low.abs(), high.abs())


def normalise_maps(maps: Tensor) -> Tensor:
    """Each map (..., H, W) min-max scaled to [0, 1]; a constant map (:func:`is_constant`) gives
    zeros."""
    return normalise_maps_(maps.float().clone())


def normalise_maps_(maps: Tensor) -> Tensor:
    """:func:`normalise_maps` in place on float maps (..., H, W); returns ``maps``."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return maps.sub_(low).div_(safe).masked_fill_(is_constant(low, high), 0.0)


def _targets(scores: Tensor, classes: Tensor | Sequence[int] | None, top_k: int) -> Tensor:
    """Target classes (N, T) from class scores (N, C): given ones, or the top ``top_k``."""
    n, c = scores.shape
    if classes is None:
        return scores.topk(min(top_k, c), dim=1).indices
    # A copy, so that classes from an inference-mode run can feed a gradient method.
    targets = torch.as_tensor(classes, dtype=torch.long, device=scores.device).clone()
    if targets.ndim == 1:
        targets = targets.expand(n, -1)  # (N, T)
    if targets.shape[0] != n or targets.numel() == 0:
        raise ValueError(f"classes of shape {tuple(targets.shape)} do not fit {n} images")
    if int(targets.min()) < 0 or int(targets.max()) >= c:
        raise ValueError(f"a target class is outside the model's {c} outputs")
    return targets


@dataclass(frozen=True)
class _PassCounts:
    total: int
    saved: int
    per_image: Tensor  # (N,)
    saved_per_image: Tensor  # (N,)


def _result(
    maps: Tensor, targets: Tensor, scores: Tensor, counts: _PassCounts, head: Head
) -> CamResult:
    """The result from maps (N, T, h, w), targets (N, T) and class scores (N, classes)."""
    return CamResult(
        maps=maps.float(),
        classes=targets,
        probabilities=head.probabilities(scores).gather(1, targets),
        logits=scores.gather(1, targets),
        forward_passes=counts.total,
        forward_passes_saved=counts.saved,
        image_passes=counts.per_image,
        image_passes_saved=counts.saved_per_image,
    )


def _chosen_channels(acts: Tensor, config: CamConfig) -> Tensor:
    """Channels (N, K) bool that take part: all, or the top-N by variance (faster-scorecam)."""
    n, k = acts.shape[:2]
    if config.method != "faster-scorecam" or config.top_channels >= k:
        return torch.ones(n, k, dtype=torch.bool, device=acts.device)
    top = acts.flatten(2).var(dim=2).topk(config.top_channels, dim=1).indices  # (N, top)
    return torch.zeros(n, k, dtype=torch.bool, device=acts.device).scatter_(1, top, True)


def _channel_scores(
    forward: ScoreBatch,
    images: Tensor,
    acts: Tensor,
    targets: Tensor,
    config: CamConfig,
    head: Head,
) -> tuple[Tensor, Tensor, _PassCounts]:
    """Score of each chosen channel's masked input for each target: (N, K, T).

    Returns the scores, the chosen channels (N, K) and the forward-pass counts.
    """
    n, k = acts.shape[:2]
    chosen = _chosen_channels(acts, config)  # (N, K)
    flat = acts.flatten(2)  # (N, K, h*w)
    low, high = flat.amin(dim=2), flat.amax(dim=2)  # (N, K)
    varying = chosen & ~is_constant(low, high)  # (N, K)
    noisy = config.method == "sscam"
    # Noisy masks are never identical, so sscam scores every chosen channel.
    todo = chosen if noisy else varying
    pairs = todo.nonzero()  # (P, 2) image, channel; the one host sync, before the loop
    if config.share_masks and not noisy and len(pairs):
        unique, inverse = _unique_masks(flat, low, high, pairs)
    else:
        unique, inverse = pairs, None
    score_of = _score_function(targets, config.weighting, head)
    samples = config.samples if config.method in ("sscam", "iscam") else 1
    needs_zero = bool((chosen & ~todo).any())
    scores = torch.zeros(n, k, targets.shape[1], device=acts.device)  # (N, K, T)
    if needs_zero:
        zero_logits = forward(torch.zeros_like(images[:1])).float()  # (1, C)
        zero_scores = score_of(zero_logits.expand(n, -1), torch.arange(n, device=acts.device))
        scores[:] = zero_scores[:, None, :]  # (N, 1, T) over every channel
    unique_scores = _masked_scores(forward, images, acts, unique, score_of, config)  # (U, T)
    pair_scores = unique_scores if inverse is None else unique_scores[inverse]  # (P, T)
    scores[pairs[:, 0], pairs[:, 1]] = pair_scores
    per_image = torch.bincount(unique[:, 0], minlength=n) * samples  # (N,)
    saved_per_image = chosen.sum(dim=1) * samples - per_image  # (N,)
    passes = len(unique) * samples + int(needs_zero)
    counts = _PassCounts(passes, int(chosen.sum()) * samples - passes, per_image, saved_per_image)
    return scores, chosen, counts


def _unique_masks(flat: Tensor, low: Tensor, high: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
    """Pairs whose normalised maps are distinct within their image, and each pair's unique index.

    Two channels of one image with A_j = a * A_i + b (a > 0) have the same min-max normalised
    upsampled mask (bilinear upsampling is linear), so their masked inputs are identical.
    """
    img, ch = pairs[:, 0], pairs[:, 1]
    span = (high - low)[img, ch, None]  # (P, 1)
    normalised = (flat[img, ch] - low[img, ch, None]) / span  # (P, h*w) in [0, 1]
    levels = torch.round(normalised * MASK_LEVELS).long()
    keys = torch.cat([img[:, None], levels], dim=1)  # (P, 1 + h*w)
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)  # (P,)
    count = int(inverse.max()) + 1
    first = torch.full((count,), len(pairs), device=pairs.device, dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(pairs), device=pairs.device), "amin")
    return pairs[first], inverse


ScoreFunction = Callable[[Tensor, Tensor], Tensor]


def _score_function(targets: Tensor, weighting: str, head: Head) -> ScoreFunction:
    """Turn logits (B, C) of masked inputs of images ``img`` (B,) into target scores (B, T):
    the class scores (``softmax`` weighting) or the head's probabilities (``prob``)."""

    def score(logits: Tensor, img: Tensor) -> Tensor:
        values = head.scores(logits.float())  # (B, classes)
        if weighting == "prob":
            values = head.probabilities(values)
        return values.gather(1, targets[img])

    return score


def _masked_scores(
    forward: ScoreBatch,
    images: Tensor,
    acts: Tensor,
    pairs: Tensor,
    score_of: ScoreFunction,
    config: CamConfig,
) -> Tensor:
    """Scores (P, T) of the masked inputs of (image, channel) ``pairs`` (P, 2), chunk by chunk."""
    per_pair = config.samples if config.method in ("sscam", "iscam") else 1
    generator = _noise_generator(images.device, config)
    batch = config.batch_size or auto_batch_size(images.device)
    chunk = max(1, min(len(pairs), batch // per_pair))
    # One buffer for every chunk's masked images: a fresh (B*S, 3, H, W) tensor per chunk costs
    # more than the masking itself on the CPU (page faults of new allocations). ``forward`` is
    # synchronous and keeps no reference to its input, so the next chunk may overwrite it.
    buffer = images.new_empty((chunk * per_pair, *images.shape[1:]))

    def score_chunk(start: int, end: int) -> Tensor:
        part = pairs[start:end]  # (B, 2)
        inputs = _masked_inputs(images, acts, part, config, generator, buffer)  # (B*S, 3, H, W)
        logits = _rows(forward(inputs), len(inputs))  # (B*S, C)
        img = part[:, 0].repeat_interleave(per_pair)  # (B*S,)
        return score_of(logits, img).view(len(part), per_pair, -1).mean(dim=1)  # (B, T)

    return map_in_chunks(score_chunk, len(pairs), chunk, images.device)


def _rows(output: Tensor, count: int) -> Tensor:
    """``output`` (count, ...) of a pass over ``count`` images; a model that returns another
    number of rows would mix up images, so it is refused in one line."""
    if output.shape[0] != count:
        raise UnsupportedModel(
            f"the model returned {output.shape[0]} rows for a batch of {count} images; "
            "scorecam needs one row per image"
        )
    return output


def auto_batch_size(device: torch.device) -> int:
    """Images per forward pass when none is given (AUTO_BATCH_SIZE, measured per device type)."""
    return AUTO_BATCH_SIZE.get(device.type, 32)


def map_in_chunks(
    fn: Callable[[int, int], Tensor], count: int, chunk: int, device: torch.device
) -> Tensor:
    """Stack ``fn(start, end)`` (end - start, ...) over ``range(count)`` in chunks of ``chunk``.

    The one batching loop of the project: results go into one preallocated tensor on ``device``
    (no host syncs); on CUDA out-of-memory the chunk is halved and the same chunk retried.
    """
    out: Tensor | None = None
    start = 0
    while start < count:
        end = min(start + chunk, count)
        try:
            part = fn(start, end)
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            torch.cuda.empty_cache()
            continue
        if out is None:
            out = torch.empty((count, *part.shape[1:]), dtype=part.dtype, device=device)
        out[start:end] = part
        start = end
    return out if out is not None else torch.empty(0, 1, device=device)


def _noise_generator(device: torch.device, config: CamConfig) -> torch.Generator | None:
    if config.method != "sscam":
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    return generator


def _masked_inputs(
    images: Tensor,
    acts: Tensor,
    pairs: Tensor,
    config: CamConfig,
    generator: torch.Generator | None,
    buffer: Tensor,
) -> Tensor:
    """Masked images (B * S, 3, H, W) for pairs (B, 2), written into the first B * S rows of
    ``buffer`` (at least B * S, 3, H, W); S = 1 for exact Score-CAM."""
    img, ch = pairs[:, 0], pairs[:, 1]
    size = (int(images.shape[-2]), int(images.shape[-1]))
    masks = normalise_maps_(upsample_maps(acts[img, ch][:, None], size))  # (B, 1, H, W)
    if config.method == "iscam":
        steps = torch.arange(1, config.samples + 1, device=masks.device) / config.samples
        masks = (masks[:, None] * steps.view(1, -1, 1, 1, 1)).flatten(0, 1)  # (B*S, 1, H, W)
    elif config.method == "sscam":
        masks = masks.repeat_interleave(config.samples, dim=0)  # (B*S, 1, H, W)
        noise = torch.randn(masks.shape, device=masks.device, generator=generator)
        masks = masks + config.noise_std * noise
    repeats = masks.shape[0] // len(pairs)
    out = buffer[: masks.shape[0]]
    torch.index_select(images, 0, img.repeat_interleave(repeats), out=out)
    return out.mul_(masks)  # (B*S, 3, H, W)


def _weights(scores: Tensor, chosen: Tensor, weighting: str) -> Tensor:
    """Channel weights (N, K, T) from scores (N, K, T); unchosen channels weigh 0."""
    mask = chosen[:, :, None]
    if weighting == "softmax":
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=1)
    return scores * mask


def _gradient_cams(
    model: nn.Module,
    ref: LayerRef,
    images: Tensor,
    classes: Tensor | Sequence[int] | None,
    top_k: int,
    config: CamConfig,
) -> CamResult:
    """Grad-CAM, Grad-CAM++ and LayerCAM: one forward and one backward pass per target."""
    with torch.enable_grad(), precision_context(images.device, config.precision):
        inputs = as_model_input(images).detach().requires_grad_(True)
        with capture(model, ref, keep_graph=True) as seen:
            logits = model(inputs)  # (N, C)
        acts = seen.value()  # (N, K, h, w), in the graph
        head = Head.of(config.head, logits.shape[1])
        scores = head.scores(logits)  # (N, classes)
        targets = _targets(scores.detach().float(), classes, top_k)  # (N, T)
        maps = []
        for t in range(targets.shape[1]):
            picked = scores.gather(1, targets[:, t : t + 1]).sum()
            (grads,) = torch.autograd.grad(picked, acts, retain_graph=t + 1 < targets.shape[1])
            maps.append(_gradient_map(config.method, acts.detach().float(), grads.float()))
    stacked = torch.stack(maps, dim=1)  # (N, T, h, w)
    none = torch.zeros(len(images), dtype=torch.long, device=images.device)
    counts = _PassCounts(0, 0, none, none)
    return _result(stacked, targets, scores.detach().float(), counts, head)


def _gradient_map(method: str, acts: Tensor, grads: Tensor) -> Tensor:
    """One map (N, h, w) from activations and gradients (N, K, h, w)."""
    if method == "layercam":
        return (grads.relu() * acts).sum(dim=1).relu()
    if method == "gradcam":
        weights = grads.mean(dim=(2, 3))  # (N, K)
    else:  # gradcam++ (Chattopadhay et al. 2018, closed form with the exponential trick)
        squared, cubed = grads.pow(2), grads.pow(3)
        denominator = 2 * squared + acts.sum(dim=(2, 3), keepdim=True) * cubed
        alpha = squared / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * grads.relu()).sum(dim=(2, 3))  # (N, K)
    return torch.einsum("nk,nkhw->nhw", weights, acts).relu()
