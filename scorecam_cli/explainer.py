"""A model ready to explain: the loaded model on its device, the layer, and how (no click)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from scorecam_cli.cam import CamConfig, CamResult, ScoreBatch, compute_cams
from scorecam_cli.layers import LayerRef
from scorecam_cli.models import LoadedModel


@dataclass(frozen=True)
class Explainer:
    """A model ready on its device, the layer to explain, and how."""

    model: LoadedModel
    layer: LayerRef
    device: torch.device
    config: CamConfig
    classes: Sequence[int] | None = None
    top_k: int = 1
    input_size: tuple[int, int] | None = None
    score_batch: ScoreBatch | None = None  # runs the masked passes (a backend); None: the model

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size or self.model.preprocessing.input_size

    def settings(self) -> dict[str, object]:
        """How the maps were made, beyond what each record says (for the manifest)."""
        return {
            "weights": self.model.weights,
            "input_size": list(self.size),
            "weighting": self.config.weighting,
            "precision": self.config.precision,
            "classes": list(self.classes) if self.classes else None,
            "top_k": self.top_k,
        }

    def explain(self, batch: torch.Tensor) -> CamResult:
        """Maps of preprocessed images (N, 3, H, W) on the CPU."""
        images = batch.to(self.device, non_blocking=True)
        return compute_cams(
            self.model.module,
            self.layer,
            images,
            self.classes,
            self.top_k,
            self.config,
            score_batch=self.score_batch,
        )
