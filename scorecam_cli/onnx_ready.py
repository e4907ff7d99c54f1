"""An ONNX file made ready to explain from an :class:`~scorecam_cli.spec.ExplainSpec`: both of
Score-CAM's passes in ONNX Runtime, gradient-free, no torch model anywhere.

What :func:`scorecam_cli.explainer.build_explainer` does for a torch model, done for an ONNX file:
the file loaded and checked (:mod:`scorecam_cli.models.onnx_source`), the input size from the
graph (or ``--input-size`` where it is dynamic), the layer resolved among the graph's tensors
(:mod:`scorecam_cli.onnx_layers`), one session with the first and the masked passes
(:mod:`scorecam_cli.backends.onnx_file`) on the device, and the ONNX Runtime backend's default
batch. What needs a torch model (gradient methods, fp16/bf16 autocast, the other backends) is
refused in one line.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace

import torch

from scorecam_cli.backends.kinds import default_batch_size, default_threads
from scorecam_cli.backends.onnx_file import OnnxPasses, open_passes
from scorecam_cli.cam import CamConfig
from scorecam_cli.choices import GRADIENT_METHODS
from scorecam_cli.devices import resolve_device
from scorecam_cli.errors import BackendUnavailable, BadRequest
from scorecam_cli.layers import LayerRef
from scorecam_cli.models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, load_model_spec
from scorecam_cli.models.onnx_source import INSTALL_HINT, onnx_graph, onnx_input_size
from scorecam_cli.onnx_layers import graph_layers, resolve_onnx_layer
from scorecam_cli.spec import ExplainSpec

log = logging.getLogger("scorecam_cli")
BACKEND = "onnxruntime"  # what runs an ONNX file's passes (its batch sizes: backends.kinds)


@dataclass(frozen=True)
class OnnxReady:
    """An ONNX file ready on its device: the model, its layer, the input size, the config (with
    the backend's default batch) and both passes."""

    model: LoadedModel
    layer: LayerRef
    size: tuple[int, int]
    device: torch.device
    config: CamConfig
    passes: OnnxPasses


def open_onnx(spec: ExplainSpec) -> OnnxReady:
    """The ONNX file of ``spec.model`` ready to explain (see the module docstring); raises the
    library's one-line errors."""
    loaded = load_model_spec(spec.model)
    check_onnx_spec(loaded, spec)
    graph = onnx_graph(loaded)
    size = onnx_input_size(graph, spec.input_size)
    layers = graph_layers(graph, size, spec.layer.prefix_tokens)
    info = resolve_onnx_layer(layers, spec.layer.name, size, spec.layer.layout)
    how = "default" if spec.layer.name is None else "chosen"
    shape = "x".join(str(v) for v in info.map_shape or ())
    name = info.ref.name if info.ref.name.isprintable() else repr(info.ref.name)  # anyone's text
    log.info("layer %s (%s), %s, %s", name, how, info.layout, shape)
    device = _device(spec.compute.device)
    threads = spec.compute.threads or default_threads()
    torch.set_num_threads(threads)
    passes = open_passes(graph, info, layers.types[info.ref.name], size, device, threads)
    prep = loaded.preprocessing
    # --mean/--std override the preprocessing in load_model_spec: then this is not said.
    if prep.mean == IMAGENET_MEAN and prep.std == IMAGENET_STD:
        log.info("%s: normalised with ImageNet's mean and std (an ONNX file has none)", loaded.name)
    batch = spec.method.batch_size or default_batch_size(BACKEND, device)
    return OnnxReady(
        replace(loaded, num_classes=passes.num_classes),
        info.ref,
        size,
        device,
        replace(spec.method, batch_size=batch),
        passes,
    )


def check_onnx_spec(loaded: LoadedModel, spec: ExplainSpec) -> None:
    """One-line errors for what an ONNX file cannot do: a gradient method (no torch model),
    fp16/bf16 (autocast is PyTorch's), another backend than ONNX Runtime, or no onnxruntime."""
    if spec.method.method in GRADIENT_METHODS:
        loaded.torch_module(spec.method.method)  # raises, saying why
    if spec.method.precision != "fp32":
        raise BadRequest(
            f"{loaded.name}: --precision {spec.method.precision} is PyTorch autocast; an ONNX "
            "file runs in the precision it was saved in (leave out --precision)"
        )
    if spec.compute.backend not in ("auto", BACKEND):
        raise BadRequest(
            f"{loaded.name}: an ONNX file runs in ONNX Runtime; --backend {spec.compute.backend} "
            "is for PyTorch models (leave out --backend)"
        )
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable(f"{loaded.name}: running ONNX files needs {INSTALL_HINT}")


def _device(text: str) -> torch.device:
    """``--device``: as for torch models, except that ``auto`` stays on the CPU when ONNX Runtime
    has no CUDA provider here, and a CUDA device needs one."""
    device = resolve_device(text)
    if device.type == "cuda" and not _ort_has_cuda():
        if text == "auto":
            return torch.device("cpu")
        raise BackendUnavailable(
            "onnxruntime has no CUDA provider here: pip install onnxruntime-gpu, or use "
            "--device cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise BackendUnavailable(f"--device {text}: ONNX Runtime runs on the CPU or CUDA here")
    return device


def _ort_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
