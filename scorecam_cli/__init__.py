"""scorecam-cli: Score-CAM heatmaps for image classifiers.

The public API is imported lazily so that ``scorecam --help`` stays instant:
``from scorecam_cli import compute_cams, load_model`` pulls in torch only then.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "CamConfig",
    "CamResult",
    "ExplainSpec",
    "__version__",
    "build_explainer",
    "compute_cams",
    "load_model",
    "resolve_layer",
    "score_cams",
]

_LAZY = {
    "CamConfig": "scorecam_cli.cam",
    "CamResult": "scorecam_cli.cam",
    "ExplainSpec": "scorecam_cli.spec",
    "build_explainer": "scorecam_cli.explainer",
    "compute_cams": "scorecam_cli.cam",
    "load_model": "scorecam_cli.models",
    "resolve_layer": "scorecam_cli.layers",
    "score_cams": "scorecam_cli.cam",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scorecam_cli' has no attribute {name!r}")
