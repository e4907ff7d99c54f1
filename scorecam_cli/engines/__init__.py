"""Engines: what runs the stages over the inputs, side by side behind one entry.

- ``local`` (the default): :mod:`scorecam_cli.engines.local`, this process, no Ray anywhere.
- ``ray``: :mod:`scorecam_cli.engines.ray` (extra ``scorecam-cli[ray]``) runs the same stages on
  a Ray cluster: decoding as tasks, the model in a pool of actors built from the job's spec.

Each engine module has ``driver_explainer(spec)`` (this process's explainer: it decides what to
skip and gives the size and normalisation) and ``run(job, inputs, stop)`` (one event per input).
Importing this package imports neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from scorecam_cli.events import Event
    from scorecam_cli.explainer import Explainer
    from scorecam_cli.images import InputImage
    from scorecam_cli.spec import ExplainSpec
    from scorecam_cli.stages import StopRequest
    from scorecam_cli.writing import RunOptions

ENGINES = {"local": "scorecam_cli.engines.local", "ray": "scorecam_cli.engines.ray"}


@dataclass(frozen=True)
class Cluster:
    """Where a distributed engine runs: ``address`` (None: a local cluster) and model actors."""

    address: str | None = None
    actors: int = 1


@dataclass(frozen=True)
class EngineJob:
    """One run for an engine: the spec (to build explainers elsewhere, e.g. in Ray actors), this
    process's explainer built from it, where and how to write, and the cluster."""

    spec: ExplainSpec
    explainer: Explainer
    options: RunOptions
    cluster: Cluster = Cluster()


class Engine(Protocol):
    """What an engine module provides."""

    driver_explainer: Callable[[ExplainSpec], Explainer]
    run: Callable[[EngineJob, Iterable[InputImage], StopRequest | None], Iterator[Event]]


def engine(name: str) -> Engine:
    """The engine module called ``name`` (one of :data:`ENGINES`), imported now."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])
