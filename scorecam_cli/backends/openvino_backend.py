"""OpenVINO: the masked passes on the exported model, CPU plugin, pinned to fp32."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from scorecam_cli.backends.cache import openvino_blob_dir
from scorecam_cli.cam import ScoreBatch
from scorecam_cli.devices import as_float32


def open_openvino(path: Path, device: torch.device, threads: int) -> ScoreBatch:
    """Logits (B, C) of CPU images (B, 3, H, W), by an OpenVINO infer request.

    The plugin's default precision on CPUs with bf16 units (AMX, AVX512-BF16) is bf16, which
    moves logits by 1e-2: fp32 is pinned. Compiled blobs are cached by OpenVINO itself in the
    export's entry of the scorecam cache, per OpenVINO version. The input is shared with the
    tensor (no copy).
    """
    import openvino as ov

    if device.type != "cpu":
        raise RuntimeError("the openvino backend runs on the CPU only")
    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "CACHE_DIR": str(openvino_blob_dir(path)),
    }
    compiled = core.compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def score_batch(images: Tensor) -> Tensor:
        batch = as_float32(images).numpy()  # (B, 3, H, W), a view of the tensor
        outputs = request.infer({0: batch}, share_inputs=True, share_outputs=False)
        return torch.from_numpy(outputs[0])  # (B, C), a copy of its own

    return score_batch
