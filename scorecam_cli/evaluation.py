"""``scorecam eval``'s library half: stream inputs -> each method's maps -> faithfulness metrics
(and the sanity check), every map from the one :class:`~scorecam_cli.explainer.Explainer`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from scorecam_cli.cam import CamConfig
from scorecam_cli.choices import GRADIENT_METHODS
from scorecam_cli.events import NOT_FINITE, Event, Explained, Failure
from scorecam_cli.explainer import Explainer
from scorecam_cli.faithfulness import (
    Curve,
    Explain,
    Faithfulness,
    FaithfulnessScores,
    faithfulness_scores,
    summarise,
)
from scorecam_cli.heads import Head
from scorecam_cli.images import InputImage
from scorecam_cli.sanity import SanityStep, merge_sanity, sanity_check
from scorecam_cli.stages import decoded_batches, model_failure
from scorecam_cli.writing import DecodeOptions


@dataclass(frozen=True)
class MethodReport:
    """Faithfulness of one method over every input, and its sanity check when asked for."""

    method: str
    faithfulness: Faithfulness
    sanity: list[SanityStep] | None


def evaluate_methods(
    explainer: Explainer,
    configs: Sequence[CamConfig],
    inputs: Iterable[InputImage],
    *,
    steps: int,
    sanity: bool,
    decode: DecodeOptions,
    on_event: Callable[[Event], None],
) -> list[MethodReport]:
    """Measure each method's maps on every input (see :mod:`scorecam_cli.faithfulness`).

    The target of each image is the explainer's first class, or its top-1 class. ``on_event``
    hears of every input as it is done (Explained with no records, or Failure).
    """
    _check_methods(explainer, configs, sanity)
    scores: dict[str, list[FaithfulnessScores]] = {c.method: [] for c in configs}
    checks: dict[str, list[list[SanityStep]]] = {c.method: [] for c in configs}
    for failures, good, batch in decoded_batches(explainer, inputs, decode):
        for failure in failures:
            on_event(failure)
        if batch is None:
            continue
        try:
            measured, sane, finite = _measure(explainer, configs, batch, steps, sanity)
        except Exception as exc:  # the model failed on this batch: its inputs fail, one line each
            reason = model_failure(exc)
            for item in good:
                on_event(Failure(str(item.input.path), reason))
            continue
        for method, part in measured.items():
            scores[method].append(part)
        for method, steps_done in sane.items():
            checks[method].append(steps_done)
        for item, ok in zip(good, finite.tolist(), strict=True):
            path = str(item.input.path)
            on_event(Explained(path, []) if ok else Failure(path, NOT_FINITE))
    if not any(part.images for parts in scores.values() for part in parts):
        return []
    return [
        MethodReport(
            c.method,
            summarise(scores[c.method]),
            merge_sanity(checks[c.method]) if sanity else None,
        )
        for c in configs
    ]


def _check_methods(explainer: Explainer, configs: Sequence[CamConfig], sanity: bool) -> None:
    """UnsupportedModel (one line) when a method or the sanity check needs a torch model (its
    gradients, its layers to randomise) and the model has none (an ONNX file)."""
    for config in configs:
        if config.method in GRADIENT_METHODS:
            explainer.model.torch_module(config.method)
    if sanity:
        explainer.model.torch_module("--sanity")


def _measure(
    explainer: Explainer,
    configs: Sequence[CamConfig],
    batch: torch.Tensor,
    steps: int,
    sanity: bool,
) -> tuple[dict[str, FaithfulnessScores], dict[str, list[SanityStep]], torch.Tensor]:
    """Each method's scores of the images ``batch`` (N, 3, H, W) whose logits, maps and scores
    are all finite, its sanity check, and which images those are (N,) bool."""
    model = explainer.logits  # the torch module's logits, or an ONNX file's session's
    images = batch.to(explainer.device)  # (N, 3, H, W)
    targets, finite = _eval_targets(explainer, images)  # (N,), (N,) bool
    saliencies = {}
    for config in configs:
        saliencies[config.method] = explainer.saliency(images, targets, config)  # (N, H, W)
        finite &= torch.isfinite(saliencies[config.method].flatten(1)).all(dim=1)
    kept = finite.nonzero().flatten()  # (M,): only finite logits and maps are measured
    images, targets = images[kept], targets[kept]
    measured: dict[str, FaithfulnessScores] = {}
    sane: dict[str, list[SanityStep]] = {}
    for config in configs if len(kept) else []:
        measured[config.method] = faithfulness_scores(
            model,
            images,
            saliencies[config.method][kept],  # (M, H, W)
            targets,
            steps=steps,
            batch_size=config.batch_size,
            precision=config.precision,
            head=config.head,
        )
        finite[kept] &= _finite_scores(measured[config.method])
        if sanity:
            explain = _fixed_targets(explainer, targets, config)
            sane[config.method] = sanity_check(explainer.model.torch_module(), images, explain)
    final = finite[kept]  # (M,): images whose every score is finite too
    if len(kept) and not bool(final.all()):
        measured = {method: _subset(part, final) for method, part in measured.items()}
    return measured, sane, finite


def _eval_targets(explainer: Explainer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The class each image is judged on (N,): the first --class, or the model's top-1 (by the
    head's class scores); and which images have finite logits (N,) bool (the others are failed,
    never measured)."""
    logits = explainer.logits(images)  # (N, C)
    finite = torch.isfinite(logits.float()).all(dim=1).clone()
    if explainer.classes:
        targets = torch.full((len(images),), explainer.classes[0], device=images.device)
    else:
        scores = Head.of(explainer.config.head, logits.shape[1]).scores(logits.float())
        targets = torch.nan_to_num(scores).argmax(dim=1)
    return targets.clone(), finite


def _fixed_targets(explainer: Explainer, targets: torch.Tensor, config: CamConfig) -> Explain:
    """``explain(module, images)`` -> maps (N, H, W) of ``targets`` (N,), for the sanity check:
    its randomised copies of the model run their own passes in PyTorch."""
    return lambda module, images: explainer.saliency(images, targets, config, module)


def _finite_scores(scores: FaithfulnessScores) -> torch.Tensor:
    """(N,) bool: images whose probabilities and curves are all finite."""
    parts = [
        scores.original[:, None],
        scores.explained[:, None],
        scores.deletion.probabilities,
        scores.insertion.probabilities,
    ]
    return (
        torch.cat([p.float() for p in parts], dim=1)
        .isfinite()
        .all(dim=1)
        .to(scores.original.device)
    )


def _subset(scores: FaithfulnessScores, keep: torch.Tensor) -> FaithfulnessScores:
    """The scores of the images where ``keep`` (N,) bool is true."""
    keep = keep.to(scores.original.device)
    return FaithfulnessScores(
        scores.original[keep],
        scores.explained[keep],
        Curve(scores.deletion.fractions, scores.deletion.probabilities[keep]),
        Curve(scores.insertion.fractions, scores.insertion.probabilities[keep]),
    )
