"""A model ready to explain, built by the library from one :class:`~scorecam_cli.spec.ExplainSpec`.

:func:`build_explainer` is the one way in: ``run``, ``eval``, the sanity check and every engine
(the local one, Ray's actors) explain through the :class:`Explainer` it returns. The explainer
holds the two passes the Score-CAM core needs: the first pass (logits and the layer's
activations; the capture hook of a torch module unless a ``first_pass`` is given) and the masked
passes (a backend's ``score_batch``, or the module itself). An ONNX file gives both from its own
ONNX Runtime session (:mod:`scorecam_cli.onnx_ready`), without a torch module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from scorecam_cli.aspect import AspectResize, aspect_resize, aspect_spec
from scorecam_cli.cam import (
    CamConfig,
    CamResult,
    FirstPass,
    ScoreBatch,
    compute_cams,
    score_cams,
    torch_first_pass,
    torch_score_batch,
    upsample_maps,
)
from scorecam_cli.choices import GRADIENT_METHODS, SCORE_METHODS
from scorecam_cli.devices import as_model_input
from scorecam_cli.errors import BadInputSize, UnknownClass
from scorecam_cli.heads import Head
from scorecam_cli.layers import LayerInfo, LayerRef
from scorecam_cli.models import LoadedModel
from scorecam_cli.spec import ExplainSpec

log = logging.getLogger("scorecam_cli")


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
    first_pass: FirstPass | None = None  # logits and activations; None: the model's, hooked
    aspect: AspectResize | None = None  # --keep-aspect: each image's size; None: ``size``

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size or self.model.preprocessing.input_size

    def settings(self) -> dict[str, object]:
        """How the maps were made, beyond what each record says (for the manifest)."""
        prep = self.model.preprocessing
        return {
            "weights": self.model.weights,
            "labels": self.model.labels,
            "mean": list(prep.mean),
            "std": list(prep.std),
            "head": self.config.head,
            "input_size": list(self.size),
            "keep_aspect": self.aspect is not None,
            "weighting": self.config.weighting,
            "precision": self.config.precision,
            "classes": list(self.classes) if self.classes else None,
            "top_k": self.top_k,
        }

    def explain(
        self,
        batch: Tensor,
        config: CamConfig | None = None,
        classes: Tensor | None = None,
        module: nn.Module | None = None,
    ) -> CamResult:
        """Maps of preprocessed images ``batch`` (N, C, H, W), on any device.

        ``config``: another method than the explainer's own (eval measures several);
        ``classes``: targets (N, T) instead of the explainer's classes or top-k; ``module``: another
        torch model of the same architecture (the sanity check's randomised copies), which runs
        its own passes in PyTorch.
        """
        config = config or self.config
        images = batch.to(self.device, non_blocking=True)
        targets = self.classes if classes is None else classes
        if module is not None or config.method in GRADIENT_METHODS:
            model = self.model.torch_module(config.method) if module is None else module
            return compute_cams(model, self.layer, images, targets, self.top_k, config)
        first = self.first_pass or torch_first_pass(self.model.torch_module(), self.layer)
        score = self.score_batch or torch_score_batch(self.model.torch_module())
        separate = self.score_batch is not None
        return score_cams(first, score, images, targets, self.top_k, config, separate)

    def saliency(
        self,
        images: Tensor,
        targets: Tensor,
        config: CamConfig | None = None,
        module: nn.Module | None = None,
    ) -> Tensor:
        """One map per image (N, H, W) at the images' size, for the classes ``targets`` (N,)."""
        result = self.explain(images, config, targets.reshape(-1, 1), module)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return upsample_maps(result.maps, size)[:, 0]  # (N, H, W)

    def logits(self, images: Tensor) -> Tensor:
        """The model's logits (N, C) of preprocessed ``images`` (N, channels, H, W) on the
        device."""
        with torch.inference_mode():
            if self.first_pass is not None:
                return self.first_pass(images)[0]
            return self.model.torch_module()(as_model_input(images))


def build_explainer(spec: ExplainSpec, *, check_precision: bool = True) -> Explainer:
    """The model of ``spec`` ready to explain: loaded, its layer resolved by a dry run at the input
    size (logged with its layout), on its device, with the backend of its masked passes.

    The backend is loaded when the method has masked passes; its default batch size becomes the
    config's when none was given. ``check_precision`` is off for a Ray driver, which computes
    nothing (its actors check on their own devices). Raises the library's one-line errors:
    :class:`~scorecam_cli.errors.BadRequest` for what cannot be done as asked.
    """
    from scorecam_cli.backends import load_backend
    from scorecam_cli.devices import check_cpu_precision, prepare_model, resolve_device
    from scorecam_cli.models import describe, parse_class
    from scorecam_cli.models.sources import is_onnx

    spec = aspect_spec(spec)  # --keep-aspect: refused for fixed-size models, in PyTorch
    if is_onnx(spec.model.source):  # both passes in ONNX Runtime, no torch module
        return _onnx_explainer(spec)
    device = resolve_device(spec.compute.device)
    loaded, info, size = load_and_resolve(spec)
    aspect = aspect_resize(loaded, info, size) if spec.keep_aspect else None
    head = model_head(loaded, spec.method.head)
    classes = [parse_class(text, loaded.categories) for text in spec.classes] or None
    module = prepare_model(loaded.torch_module(), device)
    loaded = replace(loaded, module=module)
    masked = spec.method.method in SCORE_METHODS
    backend = load_backend(
        module,
        spec.compute.backend if masked else "torch",
        model_name=loaded.name,
        input_size=size,
        device=device,
        precision=spec.method.precision,
        threads=spec.compute.threads,
        channels=loaded.preprocessing.channels,
    )
    config = replace(
        spec.method,
        batch_size=spec.method.batch_size or backend.batch_size,
        head=head.kind if head is not None else spec.method.head,
    )
    if check_precision and backend.name == "torch":  # the other backends judge their own
        check_cpu_precision(device, config.precision)
    check_classes(head.classes if head is not None else None, classes, spec.top_k)
    log.debug("%s; on %s, masked passes: %s", describe(loaded, head), device, backend.name)
    return Explainer(
        loaded, info.ref, device, config, classes, spec.top_k, size, backend.score_batch,
        aspect=aspect,
    )  # fmt: skip


def _onnx_explainer(spec: ExplainSpec) -> Explainer:
    """The explainer of an ONNX file: its session's first pass and masked passes."""
    from scorecam_cli.models import parse_class
    from scorecam_cli.onnx_ready import open_onnx

    ready = open_onnx(spec)
    head = model_head(ready.model, spec.method.head)
    classes = [parse_class(text, ready.model.categories) for text in spec.classes] or None
    check_classes(head.classes if head is not None else None, classes, spec.top_k)
    config = replace(ready.config, head=head.kind if head is not None else ready.config.head)
    passes = ready.passes
    return Explainer(
        ready.model, ready.layer, ready.device, config, classes, spec.top_k, ready.size,
        passes.score_batch, passes.first_pass,
    )  # fmt: skip


def load_and_resolve(spec: ExplainSpec) -> tuple[LoadedModel, LayerInfo, tuple[int, int]]:
    """Load the model and resolve the layer by a dry run at the input size (the model's native
    size by default); the layer and its layout are logged. The model's ``num_classes`` is C of
    its (1, C) output in that dry run (None for any other output)."""
    from scorecam_cli.layers import resolve_layer
    from scorecam_cli.models import load_model_spec

    loaded = load_model_spec(spec.model)
    size = spec.input_size or loaded.preprocessing.input_size
    layer = spec.layer
    module = loaded.torch_module()
    channels = loaded.preprocessing.channels
    with native_size_hint(loaded), output_width(module) as width:
        info = resolve_layer(module, layer.name, size, layer.layout, layer.prefix_tokens, channels)
    how = "default" if layer.name is None else "chosen"
    shape = "x".join(str(v) for v in info.map_shape or ())
    log.info("layer %s (%s), %s, %s", info.ref, how, info.layout, shape)
    return replace(loaded, num_classes=width[-1] if width else None), info, size


@contextmanager
def native_size_hint(loaded: LoadedModel) -> Iterator[None]:
    """Add the model's native size to a failed dry run's one-line error."""
    try:
        yield
    except BadInputSize as exc:
        height, width = loaded.preprocessing.input_size
        raise BadInputSize(f"{loaded.name}: {exc} (native size: {height}x{width})") from None


def model_head(loaded: LoadedModel, asked: str) -> Head | None:
    """The head ``asked`` (auto, softmax, sigmoid; auto: the one the model's source says, if
    any) of a model whose outputs the dry run found (None: unknown), with its class names
    checked against its classes."""
    from scorecam_cli.models.labels import check_count

    if loaded.num_classes is None:
        return None
    head = Head.of(loaded.head if asked == "auto" else asked, loaded.num_classes)
    if loaded.labels is not None and loaded.categories is not None:
        check_count(loaded.labels, loaded.categories, head.classes, head.binary)
    return head


@contextmanager
def output_width(module: nn.Module) -> Iterator[list[int]]:
    """Notes C of each (1, C) output of ``module`` meanwhile (a forward hook), so that classes
    and top-k are checked on the dry run's logits instead of another forward pass."""
    widths: list[int] = []

    def note(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 2:
            widths.append(int(output.shape[1]))

    handle = module.register_forward_hook(note)
    try:
        yield widths
    finally:
        handle.remove()


def check_classes(count: int | None, classes: list[int] | None, top_k: int) -> None:
    """UnknownClass for a class index or a top-k past the model's ``count`` outputs (from the
    dry run, so models without class names are checked too); None: not (1, C) logits, judged
    where they are used."""
    if count is None:
        return
    for index in classes or []:
        if index >= count:
            raise UnknownClass(f"--class {index} is out of range: the model has {count} classes")
    if not classes and top_k > count:
        raise UnknownClass(f"--top-k {top_k} is more than the model's {count} classes")
