"""CUDA runs agree with the CPU (marked `cuda`; skipped where torch sees no GPU)."""

from __future__ import annotations

import pytest
import torch

from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.devices import prepare_model
from scorecam_cli.models import load_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.fixture(scope="module")
def resnet_case() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = load_model("resnet18", "none").module.eval()
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    cpu = compute_cams(model, "layer3", images, top_k=2)
    return model, images, cpu.maps


def test_cuda_fp32_matches_cpu(resnet_case):
    model, images, cpu_maps = resnet_case
    gpu_model = prepare_model(load_model("resnet18", "none").module, torch.device("cuda"))
    gpu_model.load_state_dict(model.state_dict())
    result = compute_cams(gpu_model, "layer3", images.cuda(), top_k=2)
    scale = float(cpu_maps.abs().max())
    torch.testing.assert_close(result.maps.cpu(), cpu_maps, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_half_precision_is_close(resnet_case, precision):
    model, images, cpu_maps = resnet_case
    gpu_model = prepare_model(load_model("resnet18", "none").module, torch.device("cuda"))
    gpu_model.load_state_dict(model.state_dict())
    config = CamConfig(precision=precision)
    result = compute_cams(gpu_model, "layer3", images.cuda(), top_k=2, config=config)
    for n in range(2):
        for t in range(2):
            assert correlation(result.maps[n, t].cpu(), cpu_maps[n, t]) > 0.99


def test_cuda_embedded_model_matches_cpu():
    loaded = load_model()
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    cpu = compute_cams(loaded.module, "_swish:1", images, config=CamConfig(batch_size=64))
    gpu_model = prepare_model(load_model().module, torch.device("cuda"))
    gpu = compute_cams(gpu_model, "_swish:1", images.cuda())
    assert gpu.forward_passes == cpu.forward_passes
    assert correlation(gpu.maps.cpu(), cpu.maps) > 0.9999


def test_cuda_backends_auto_is_torch_and_onnxruntime_matches_or_is_refused(resnet_case):
    """auto keeps PyTorch on CUDA; onnxruntime runs on the CUDA provider when onnxruntime-gpu
    is installed (maps as the CPU's), else asking for it is a one-line error."""
    from scorecam_cli.backends import load_backend, resolve_backend
    from scorecam_cli.errors import BackendUnavailable

    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda) == "torch"
    model, images, cpu_maps = resnet_case
    gpu_model = prepare_model(load_model("resnet18", "none").module, cuda)
    gpu_model.load_state_dict(model.state_dict())
    try:
        backend = load_backend(
            gpu_model, "onnxruntime", model_name="resnet18", input_size=(128, 128), device=cuda
        )
    except BackendUnavailable as exc:
        assert "onnxruntime-gpu" in str(exc)
        return
    assert backend.name == "onnxruntime"
    result = compute_cams(
        gpu_model, "layer3", images.cuda(), top_k=2, score_batch=backend.score_batch
    )
    scale = float(cpu_maps.abs().max())
    torch.testing.assert_close(result.maps.cpu(), cpu_maps, rtol=1e-3, atol=1e-3 * scale)
