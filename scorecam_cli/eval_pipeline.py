"""Glue for ``scorecam eval``: stream inputs -> each method's maps -> faithfulness metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from scorecam_cli.cam import CamConfig
from scorecam_cli.evaluate import (
    Faithfulness,
    FaithfulnessScores,
    SanityStep,
    cam_explainer,
    faithfulness_scores,
    merge_sanity,
    sanity_check,
    summarise,
)
from scorecam_cli.images import InputImage
from scorecam_cli.pipeline import Event, Explained, Explainer, RunOptions, decoded_batches


@dataclass(frozen=True)
class MethodReport:
    """Faithfulness of one method over every input, and its sanity check when asked for."""

    method: str
    faithfulness: Faithfulness
    sanity: list[SanityStep] | None


def evaluate(
    explainer: Explainer,
    configs: Sequence[CamConfig],
    inputs: Iterable[InputImage],
    *,
    steps: int,
    sanity: bool,
    options: RunOptions,
    on_event: Callable[[Event], None],
) -> list[MethodReport]:
    """Measure each method's maps on every input (see :mod:`scorecam_cli.evaluate`).

    The target of each image is the explainer's first class, or its top-1 class. ``on_event``
    hears of every input as it is done (Explained with no records, or Failure).
    """
    scores: dict[str, list[FaithfulnessScores]] = {c.method: [] for c in configs}
    checks: dict[str, list[list[SanityStep]]] = {c.method: [] for c in configs}
    model = explainer.model.module
    for failures, good, batch in decoded_batches(explainer, inputs, options):
        for failure in failures:
            on_event(failure)
        if batch is None:
            continue
        images = batch.to(explainer.device)  # (N, 3, H, W)
        targets = _eval_targets(explainer, images)  # (N,)
        for config in configs:
            backend = (model, explainer.score_batch) if explainer.score_batch else None
            explain = cam_explainer(explainer.layer, targets, config, backend)
            saliency = explain(model, images)  # (N, H, W)
            scores[config.method].append(
                faithfulness_scores(
                    model,
                    images,
                    saliency,
                    targets,
                    steps=steps,
                    batch_size=config.batch_size,
                    precision=config.precision,
                )
            )
            if sanity:
                checks[config.method].append(sanity_check(model, images, explain))
        for item in good:
            on_event(Explained(str(item.input.path), []))
    if not any(scores.values()):
        return []
    return [
        MethodReport(
            c.method,
            summarise(scores[c.method]),
            merge_sanity(checks[c.method]) if sanity else None,
        )
        for c in configs
    ]


def _eval_targets(explainer: Explainer, images: torch.Tensor) -> torch.Tensor:
    """The class each image is judged on (N,): the first --class, or the model's top-1."""
    if explainer.classes:
        return torch.full((len(images),), explainer.classes[0], device=images.device)
    with torch.inference_mode():
        return explainer.model.module(images).argmax(dim=1)
