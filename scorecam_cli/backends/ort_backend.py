"""ONNX Runtime: the masked passes on the exported model, CPU or CUDA provider, I/O binding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scorecam_cli.backends.export import INPUT_NAME, OUTPUT_NAME
from scorecam_cli.cam import ScoreBatch
from scorecam_cli.devices import as_float32


def open_onnxruntime(path: Path, device: torch.device, threads: int) -> ScoreBatch:
    """Logits (B, C) of images (B, 3, H, W) on ``device``, by an ONNX Runtime session.

    Inputs and outputs are bound to the torch tensors' memory (no copies); on CUDA the session
    runs on torch's current stream (or beside torch's legacy default stream, which orders
    itself with it), so it sees the masked images torch queued before it; each run ends
    synchronised (ORT's default), so the logits are ready when it returns.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings would go to stderr unasked
    providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda = {"device_id": str(index)}
        stream = torch.cuda.current_stream(index).cuda_stream
        if stream:  # torch's default (legacy) stream is 0, which ORT rejects; that stream
            # orders itself with ORT's blocking streams anyway
            cuda["user_compute_stream"] = str(stream)
        providers.insert(0, ("CUDAExecutionProvider", cuda))
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError("ONNX Runtime could not start its CUDA provider")
    ort_device = "cuda" if device.type == "cuda" else "cpu"
    device_id = (device.index or 0) if device.type == "cuda" else 0
    classes = _class_count(session)

    def score_batch(images: Tensor) -> Tensor:
        batch = as_float32(images)  # (B, 3, H, W), usually the tensor itself
        logits = torch.empty((len(batch), classes), dtype=torch.float32, device=batch.device)
        binding = session.io_binding()
        binding.bind_input(
            INPUT_NAME, ort_device, device_id, np.float32, tuple(batch.shape), batch.data_ptr()
        )
        binding.bind_output(
            OUTPUT_NAME, ort_device, device_id, np.float32, tuple(logits.shape), logits.data_ptr()
        )
        session.run_with_iobinding(binding)
        return logits  # (B, C), written in place by the session

    return score_batch


def _class_count(session: object) -> int:
    """C of the logits (batch, C): from the graph, or from one run on a black image."""
    output = session.get_outputs()[0]  # type: ignore[attr-defined]
    if len(output.shape) == 2 and isinstance(output.shape[1], int):
        return int(output.shape[1])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]  # type: ignore[attr-defined]
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros(shape, np.float32)})  # type: ignore[attr-defined]
    return int(logits.shape[1])
