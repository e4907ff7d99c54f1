"""Backends for the masked passes: exact maps, the export cache, the fallback to PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import TinyNet, Unexportable

from scorecam_cli.backends import Backend, installed, load_backend, resolve_backend, runtimes
from scorecam_cli.backends import cache as export_cache
from scorecam_cli.backends import export as exporter
from scorecam_cli.cam import CamConfig, compute_cams, normalise_maps, upsample_maps
from scorecam_cli.errors import BackendUnavailable
from scorecam_cli.faithfulness import cam_explainer
from scorecam_cli.images import preprocess, read_image
from scorecam_cli.models import load_model

EXPORTED = ("onnxruntime", "openvino")
CPU = torch.device("cpu")
SAMPLES = Path(__file__).parent.parent / "sample_images"


@pytest.fixture
def export_count(monkeypatch):
    """How many times the exporter ran (the real exporter, counted)."""
    calls: list[tuple[int, int]] = []
    real = exporter.export_onnx

    def counting(model, input_size, path, *rest):
        calls.append(input_size)
        real(model, input_size, path, *rest)

    monkeypatch.setattr(exporter, "export_onnx", counting)
    return calls


def photos(names: tuple[str, ...], size: int) -> torch.Tensor:
    """The sample photos, preprocessed for the embedded model: (N, 3, size, size)."""
    arrays = [
        preprocess(read_image(SAMPLES / name), (size, size), (0.5,) * 3, (0.5,) * 3)
        for name in names
    ]
    return torch.from_numpy(np.stack(arrays))


def backend(model, name: str, model_name: str, size: int) -> Backend:
    loaded = load_backend(model, name, model_name=model_name, input_size=(size, size), device=CPU)
    assert loaded.name == name, f"{name} fell back to {loaded.name}"
    return loaded


def assert_same_maps(model, layer, images, name, model_name, config=None, top_k=1):
    """Maps of ``name`` agree with the torch backend's (Pearson, min-max max abs difference) and
    the masked passes are the same, image by image."""
    size = int(images.shape[-1])
    score = backend(model, name, model_name, size).score_batch
    expected = compute_cams(model, layer, images, top_k=top_k, config=config)
    got = compute_cams(model, layer, images, top_k=top_k, config=config, score_batch=score)
    assert torch.equal(got.classes, expected.classes)
    assert got.forward_passes == expected.forward_passes > 0
    assert got.forward_passes_saved == expected.forward_passes_saved
    assert torch.equal(got.image_passes, expected.image_passes)
    assert torch.equal(got.image_passes_saved, expected.image_passes_saved)
    a = normalise_maps(upsample_maps(expected.maps, (size, size))).flatten(2)  # (N, T, H*W)
    b = normalise_maps(upsample_maps(got.maps, (size, size))).flatten(2)
    assert float((a - b).abs().max()) <= 1e-3
    for first, second in zip(a.flatten(0, 1), b.flatten(0, 1), strict=True):
        pearson = float(torch.corrcoef(torch.stack([first.double(), second.double()]))[0, 1])
        assert pearson >= 0.9999
    return got


def test_the_exported_backends_are_installed():
    """CI installs the fast extra: these backends are tested, never skipped."""
    assert all(installed(name) for name in EXPORTED)


@pytest.mark.parametrize("name", EXPORTED)
def test_embedded_model_maps_match_torch_at_a_small_size(name):
    model = load_model().module.eval()
    images = photos(("coffee.png", "chelsea.png"), 64)  # two images share the chunks
    assert_same_maps(model, "_swish:1", images, name, "efficientnet_lite0")


@pytest.mark.parametrize("name", EXPORTED)
def test_embedded_model_maps_match_torch_at_full_size(name):
    """224 x 224, the model's own size: faster-scorecam's 48 channels keep it cheap."""
    model = load_model().module.eval()
    config = CamConfig(method="faster-scorecam", top_channels=48)
    images = photos(("coffee.png",), 224)
    assert_same_maps(model, "_swish:1", images, name, "efficientnet_lite0", config, top_k=2)


@pytest.mark.parametrize("name", EXPORTED)
def test_random_resnet18_maps_match_torch(name):
    torch.manual_seed(0)
    model = load_model("resnet18", "none").module.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert_same_maps(model, "layer3", images, name, "resnet18")


@pytest.mark.parametrize("name", EXPORTED)
@pytest.mark.parametrize("method", ["scorecam", "iscam", "sscam"])
def test_tiny_net_maps_and_shared_channels_match_torch(name, method, tiny_images):
    """TinyNet has zero channels and a duplicated channel: the backend shares exactly the same
    passes (counts per image equal), for every masked method."""
    config = CamConfig(
        method=method, samples=2, weighting="prob" if method == "iscam" else "softmax"
    )
    got = assert_same_maps(TinyNet().eval(), "relu", tiny_images, name, "tiny", config, top_k=2)
    if method == "scorecam":
        assert got.image_passes_saved.tolist() == [5, 5, 5]  # 4 zero channels, 1 duplicate


def test_a_second_build_does_not_export_again(export_count):
    model = TinyNet().eval()
    first = backend(model, "onnxruntime", "tiny", 32)
    second = backend(model, "openvino", "tiny", 32)  # the same ONNX file serves both backends
    assert export_count == [(32, 32)]
    assert first.score_batch is not None and second.score_batch is not None
    files = list((export_cache.cache_dir() / "onnx").glob("tiny-32x32-*"))
    assert len(files) == 1 and files[0].suffix == ".onnx"  # no temporary file left behind


def test_changed_weights_or_size_export_again(export_count):
    backend(TinyNet(seed=0).eval(), "onnxruntime", "tiny", 40)
    backend(TinyNet(seed=1).eval(), "onnxruntime", "tiny", 40)  # other weights, same name
    backend(TinyNet(seed=0).eval(), "onnxruntime", "tiny", 48)  # other input size
    backend(TinyNet(seed=1).eval(), "onnxruntime", "tiny", 40)  # cached by now
    assert export_count == [(40, 40), (40, 40), (48, 48)]


def test_a_corrupt_cached_file_is_exported_again(export_count):
    model = TinyNet(seed=2).eval()
    path = export_cache.onnx_path(model, "tiny", (32, 32))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an onnx model")
    assert backend(model, "onnxruntime", "tiny", 32).score_batch is not None
    assert export_count == [(32, 32)]


def test_an_unexportable_model_falls_back_to_torch_with_one_warning(caplog, export_count):
    model = Unexportable().eval()
    with caplog.at_level(logging.DEBUG, logger="scorecam_cli"):
        loaded = load_backend(
            model, "onnxruntime", model_name="unexportable", input_size=(32, 32), device=CPU
        )
    assert loaded.name == "torch" and loaded.score_batch is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "\n" not in message
    assert "unexportable: masked passes run in PyTorch, not onnxruntime: cannot export" in message
    assert export_count == [(32, 32)]
    assert not list((export_cache.cache_dir() / "onnx").glob("unexportable-*"))


def test_logits_that_differ_from_torch_fall_back(monkeypatch, caplog):
    """The check on seeded images catches a backend that computes something else."""
    monkeypatch.setattr(
        runtimes, "_open", lambda *args: lambda images: torch.zeros(len(images), 10)
    )
    with caplog.at_level(logging.WARNING, logger="scorecam_cli"):
        loaded = load_backend(
            TinyNet().eval(), "openvino", model_name="tiny", input_size=(32, 32), device=CPU
        )
    assert loaded.name == "torch"
    assert "openvino's logits differ from PyTorch's" in caplog.records[-1].getMessage()


def test_auto_takes_the_fastest_installed_backend_per_device():
    assert resolve_backend("auto", CPU) == "onnxruntime"
    assert resolve_backend("auto", CPU, "bf16") == "torch"  # autocast is PyTorch's
    assert resolve_backend("auto", torch.device("cuda")) == "torch"  # until measured on a GPU
    assert resolve_backend("torch", CPU, "fp16") == "torch"


def test_impossible_backend_requests_are_one_line_errors():
    with pytest.raises(BackendUnavailable, match="--precision fp16 is PyTorch autocast"):
        resolve_backend("onnxruntime", CPU, "fp16")
    with pytest.raises(BackendUnavailable, match="openvino runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        resolve_backend("tensorrt", CPU)


def test_threads_are_applied_to_torch_and_the_backend():
    before = torch.get_num_threads()
    try:
        loaded = load_backend(
            TinyNet().eval(), "torch", model_name="tiny", input_size=(32, 32), device=CPU, threads=2
        )
        assert loaded.threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_sanity_check_copies_never_use_the_backend(tiny_images):
    """cam_explainer's backend scores its own model only: a randomised copy runs in PyTorch."""
    model, other = TinyNet(seed=0).eval(), TinyNet(seed=3).eval()
    calls: list[int] = []

    def counting(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return model(images)

    explain = cam_explainer("relu", [0, 1, 2], backend=(model, counting))
    explain(other, tiny_images)
    assert calls == []
    explain(model, tiny_images)
    assert sum(calls) > 0


def test_cli_backend_maps_equal_torch_maps(tmp_path):
    from test_cli import TINY, scorecam, write_image

    image = write_image(tmp_path / "in" / "a.png")
    maps = {}
    for name in ("torch", "onnxruntime", "openvino"):
        out = tmp_path / name
        done = scorecam("run", str(image), "-o", str(out), *TINY, "--backend", name, "-k", "2")
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 2
        maps[name] = [np.load(p) for p in sorted(out.glob("*.npy"))]
    for name in EXPORTED:
        for expected, got in zip(maps["torch"], maps[name], strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_cli_unexportable_model_says_so_in_one_stderr_line(tmp_path):
    from test_cli import TINY, scorecam, write_image

    image = write_image(tmp_path / "a.png")
    args = [a if a != "tinymodels:tiny" else "tinymodels:unexportable" for a in TINY]
    done = scorecam("--quiet", "run", str(image), "-o", str(tmp_path / "out"), *args)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1  # the map was written, by the torch backend
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("scorecam: tinymodels:unexportable: masked passes run in PyTorch")


def test_cli_refuses_half_precision_for_an_exported_backend(tmp_path):
    from test_cli import TINY, scorecam, write_image

    image = write_image(tmp_path / "a.png")
    done = scorecam("run", str(image), "-o", str(tmp_path), *TINY, "--backend", "openvino",
                    "--precision", "fp16")  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert "--precision fp16 is PyTorch autocast; backend openvino runs fp32" in done.stderr


def test_auto_tries_the_next_backend_when_one_cannot_load_the_export(monkeypatch, caplog):
    real = runtimes._open

    def without_onnxruntime(backend, path, device, threads):
        if backend == "onnxruntime":
            raise RuntimeError("no CPU provider")
        return real(backend, path, device, threads)

    monkeypatch.setattr(runtimes, "_open", without_onnxruntime)
    with caplog.at_level(logging.INFO, logger="scorecam_cli"):
        loaded = load_backend(
            TinyNet().eval(), "auto", model_name="tiny", input_size=(32, 32), device=CPU
        )
    assert loaded.name == "openvino" and loaded.score_batch is not None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("onnxruntime failed" in r.getMessage() for r in caplog.records)
