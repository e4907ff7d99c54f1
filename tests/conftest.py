"""Shared fixtures: tiny seeded models that run in milliseconds on a CPU, one intra-op thread
for a module, and the synthetic task's CNN trained once per session.

``pytest --device cuda`` puts the core's fixtures (``tiny_net``, ``tiny_images``) on that device
instead (benchmarks/cuda_check.sh runs tests/test_cam.py and tests/test_constant_channels.py so).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv -> ReLU (the target layer, 12 channels) -> conv -> pool -> linear, 10 classes.

    Channels 0-3 of ``relu`` are zero for every input (their bias is very negative), and channel 5
    is exactly twice channel 4 (filters and bias doubled), so both sharing paths are exercised.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 12, 5, stride=4, padding=2)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(12, 16, 3, padding=1)
        self.head_act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            self.conv1.bias[:4] = -1e4
            self.conv1.weight[5] = 2 * self.conv1.weight[4]
            self.conv1.bias[5] = 2 * self.conv1.bias[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_act(self.conv2(self.relu(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="device of the tiny_net and tiny_images fixtures (cpu, cuda, cuda:N); default cpu",
    )


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The --device of this session. On CUDA, TF32 is off for it: the core's tests check float32
    exactness, and cuDNN's default TF32 convolutions round to a 10-bit mantissa."""
    chosen = torch.device(request.config.getoption("--device"))
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            pytest.exit(f"--device {chosen}: torch sees no CUDA GPU", returncode=4)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return chosen


@pytest.fixture(autouse=True, scope="session")
def private_export_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Backends export models into a cache of this test session, never the user's ~/.cache
    (child processes inherit it)."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture
def tiny_net(device: torch.device) -> TinyNet:
    return TinyNet().eval().to(device)


@pytest.fixture
def tiny_images(device: torch.device) -> torch.Tensor:
    """Three seeded images (3, 3, 64, 64), on the session's --device."""
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` meanwhile, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module: many tiny forward passes and training run faster on a
    busy 2-core machine (threads wait on each other), with seeded, repeatable results."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def trained_cnn() -> tuple[nn.Module, object]:
    """The synthetic task's CNN and its task (synthetic.SyntheticTask), trained once per session
    (150 steps, seconds on one thread)."""
    from synthetic import FAMILIES, SyntheticTask, train

    task = SyntheticTask()
    with torch_threads(1):
        torch.manual_seed(0)
        model = FAMILIES["cnn"].build(task.classes, task.size)
        training = train(model, task, steps=150, lr=3e-3, batch_size=16)
    assert training.accuracy > 0.95, training
    return model, task
