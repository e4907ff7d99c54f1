"""ONNX Runtime: the masked passes on the exported model, CPU or CUDA provider, I/O binding.

:func:`open_session` and :func:`run_bound` are shared with ONNX files explained as they are
(:mod:`scorecam_cli.backends.onnx_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scorecam_cli.backends.export import INPUT_NAME, OUTPUT_NAME
from scorecam_cli.cam import ScoreBatch
from scorecam_cli.devices import as_float32

# ONNX Runtime's option for the folder of a model's external data when the model comes as bytes
EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
NUMPY_TYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


def open_onnxruntime(path: Path, device: torch.device, threads: int) -> ScoreBatch:
    """Logits (B, C) of images (B, 3, H, W) on ``device``, by an ONNX Runtime session of the
    exported file ``path`` (input INPUT_NAME, output OUTPUT_NAME)."""
    session = open_session(str(path), device, threads)
    classes = _class_count(session)

    def score_batch(images: Tensor) -> Tensor:
        batch = as_float32(images)  # (B, 3, H, W), usually the tensor itself
        logits = torch.empty((len(batch), classes), dtype=torch.float32, device=batch.device)
        run_bound(session, {INPUT_NAME: batch}, {OUTPUT_NAME: logits})
        return logits  # (B, C), written in place by the session

    return score_batch


def open_session(
    model: str | bytes, device: torch.device, threads: int, external_folder: Path | None = None
) -> Any:
    """An ONNX Runtime session of ``model`` (a path, or a serialised model whose external data
    lies in ``external_folder``) on ``device``, with ``threads`` intra-op threads.

    On CUDA the session runs on torch's current stream (or beside torch's legacy default stream,
    which orders itself with it), so it sees the tensors torch queued before it; each run ends
    synchronised (ORT's default), so its outputs are ready when it returns.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings would go to stderr unasked
    if external_folder is not None:
        options.add_session_config_entry(EXTERNAL_FOLDER_KEY, str(external_folder))
    providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda = {"device_id": str(index)}
        stream = torch.cuda.current_stream(index).cuda_stream
        if stream:  # torch's default (legacy) stream is 0, which ORT rejects; that stream
            # orders itself with ORT's blocking streams anyway
            cuda["user_compute_stream"] = str(stream)
        providers.insert(0, ("CUDAExecutionProvider", cuda))
    session = ort.InferenceSession(model, sess_options=options, providers=providers)
    if device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError("ONNX Runtime could not start its CUDA provider")
    return session


def run_bound(session: Any, inputs: Mapping[str, Tensor], outputs: Mapping[str, Tensor]) -> None:
    """Run ``session`` on ``inputs``, writing ``outputs`` in place: contiguous torch tensors
    (float32, float16 or float64) bound by their memory (I/O binding, no copies)."""
    binding = session.io_binding()
    for bind, tensors in ((binding.bind_input, inputs), (binding.bind_output, outputs)):
        for name, tensor in tensors.items():
            device = tensor.device
            kind = "cuda" if device.type == "cuda" else "cpu"
            index = (device.index or 0) if device.type == "cuda" else 0
            shape = tuple(tensor.shape)
            bind(name, kind, index, NUMPY_TYPES[tensor.dtype], shape, tensor.data_ptr())
    session.run_with_iobinding(binding)


def _class_count(session: object) -> int:
    """C of the logits (batch, C): from the graph, or from one run on a black image."""
    output = session.get_outputs()[0]  # type: ignore[attr-defined]
    if len(output.shape) == 2 and isinstance(output.shape[1], int):
        return int(output.shape[1])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]  # type: ignore[attr-defined]
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros(shape, np.float32)})  # type: ignore[attr-defined]
    return int(logits.shape[1])
