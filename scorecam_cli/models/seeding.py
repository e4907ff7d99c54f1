"""Models are built under a fixed seed, so a random initialisation (``--weights none``, a factory's
own random layers) is the same in every process: two runs, the shards of a job and Ray's actors
explain with the same model, and its export is cached once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

BUILD_SEED = 0  # torch's global seed while a model is built

P = ParamSpec("P")
R = TypeVar("R")


def seeded(build: Callable[P, R]) -> Callable[P, R]:
    """``build`` run with torch's CPU generator seeded with BUILD_SEED (models are built on the
    CPU); the caller's random state is restored afterwards. CUDA is never touched."""

    @functools.wraps(build)
    def run_seeded(*args: P.args, **kwargs: P.kwargs) -> R:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(BUILD_SEED)
            return build(*args, **kwargs)

    return run_seeded
