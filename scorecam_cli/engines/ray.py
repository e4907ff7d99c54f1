"""The Ray engine (``--engine ray``): the local pipeline's pieces spread over a Ray cluster.

The driver (this process) finds the inputs and applies ``--skip-existing`` / ``--overwrite`` as
the local engine does; the inputs left become a Ray Dataset. Decoding runs as Ray tasks; the
model runs in a pool of actors (``map_batches`` with a callable class: one model load per actor,
one GPU each on a GPU cluster). Each actor explains its batches and writes the outputs itself
(atomic writes, to ``OUT`` on a file system every node shares) with
:func:`scorecam_cli.pipeline.explain_batch`, and sends back one event per input. The driver
yields those events as they arrive (completion order, not input order) and appends the manifest,
so stdout records, manifest lines, per-file errors and exit codes are those of the local engine.
Unlike the local engine, a map's manifest line follows its ``.npy`` (written by an actor, listed
by the driver): a driver killed in between leaves that map on disk without its line.

An actor that dies is restarted and its batch retried (Ray Data's actor defaults:
``max_restarts=-1``, ``max_task_retries=-1``); a batch written twice is written atomically both
times. Ray is imported only here.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorecam_cli import pipeline
from scorecam_cli.errors import ScoreCamError
from scorecam_cli.explainer import Explainer
from scorecam_cli.images import InputImage, Limits, LoadedImage, load_image
from scorecam_cli.manifest import ManifestWriter, entry_from_record
from scorecam_cli.writing import Event, Explained, Failure, RunOptions

# Builds the explainer inside an actor, on the device it is given ("cuda" or "cpu").
ExplainerFactory = Callable[[str], Explainer]


class RayUnavailable(ScoreCamError):
    """``--engine ray`` needs the extra: ``pip install 'scorecam-cli[ray]'``."""


class RayFailure(ScoreCamError):
    """The cluster could not finish the run (e.g. an actor could not load the model)."""


@dataclass(frozen=True)
class RayOptions:
    """Where the cluster is and how many model actors to run."""

    address: str | None = None  # None: start a local cluster (or use the one this process has)
    actors: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N; actors on CUDA get one GPU each
    env_vars: dict[str, str] = field(default_factory=dict)  # for workers of a cluster we start


def run(
    explainer: Explainer,
    factory: ExplainerFactory,
    inputs: Iterable[InputImage],
    options: RunOptions,
    ray_options: RayOptions,
) -> Iterator[Event]:
    """Explain ``inputs`` on a Ray cluster: one event per input, as each batch finishes.

    ``explainer`` (on this process, any device) decides what to skip and gives the size and
    normalisation; ``factory`` builds the actors' own explainers (same model and settings).
    """
    ray = _import_ray()
    todo: list[InputImage] = []
    for item in pipeline._accepted_inputs(inputs, options, explainer):
        if isinstance(item, InputImage):
            todo.append(item)
        else:
            yield item
    if not todo:
        return
    settings = pipeline.run_settings(explainer, options)
    with (
        _cluster(ray, ray_options),
        ManifestWriter(options.output_dir / options.manifest_name) as manifest,
    ):
        for row in _rows(ray, _dataset(ray, explainer, factory, todo, options, ray_options)):
            event: Event = pickle.loads(row["event"])
            if isinstance(event, Explained):
                for record in event.records:
                    manifest.append(
                        entry_from_record(
                            asdict(record), options.output_dir, event.original_size, settings
                        )
                    )
            yield event


def _rows(ray: Any, dataset: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows as they finish; a failure of the cluster becomes one line."""
    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(error).__name__
        raise RayFailure(f"the Ray engine stopped: {reason} (details: the Ray logs)") from None


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable("--engine ray needs Ray: pip install 'scorecam-cli[ray]'") from None
    quiet = not logging.getLogger("scorecam_cli").isEnabledFor(logging.INFO)  # --quiet
    logging.getLogger("ray").setLevel(logging.ERROR if quiet else logging.WARNING)
    if quiet:
        _quiet_ray_console()
    return ray


def _quiet_ray_console() -> None:
    """Only Ray's errors on stderr; its log files keep everything."""
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


@contextmanager
def _cluster(ray: Any, ray_options: RayOptions) -> Iterator[None]:
    """Connect to ``address`` or start a local cluster, unless this process is already connected;
    a cluster started here is shut down on exit. Worker logs stay out of our stdout."""
    if ray.is_initialized():
        yield
        return
    runtime_env = {"env_vars": ray_options.env_vars} if ray_options.env_vars else None
    ray.init(
        address=ray_options.address,
        log_to_driver=False,
        include_dashboard=False,
        runtime_env=runtime_env,
        logging_level=logging.getLogger("ray").getEffectiveLevel(),
    )
    try:
        yield
    finally:
        ray.shutdown()


def _dataset(
    ray: Any,
    explainer: Explainer,
    factory: ExplainerFactory,
    todo: list[InputImage],
    options: RunOptions,
    ray_options: RayOptions,
) -> Any:
    """inputs -> decoded rows (Ray tasks) -> events, one row each (the actor pool)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own bar of events
    gpus = _gpus_per_actor(ray, ray_options)
    _check_room(ray, ray_options.actors, gpus)
    prep = explainer.model.preprocessing
    rows = [
        {"index": n, "path": os.fsencode(item.path), "relative": os.fsencode(item.relative)}
        for n, item in enumerate(todo)
    ]
    decoded = ray.data.from_items(rows).map(
        _decode_row,
        fn_kwargs={
            "size": explainer.size,
            "mean": tuple(prep.mean),
            "std": tuple(prep.std),
            "cwd": os.getcwd(),
            "limits": options.limits,
        },
        num_cpus=0.5,
    )
    return decoded.map_batches(
        MapActor,
        fn_constructor_args=(factory, "cuda" if gpus else "cpu", options, os.getcwd()),
        batch_size=options.images_per_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ray_options.actors),
        num_cpus=1,
        num_gpus=gpus,
        # Ray Data's actor defaults do the fault tolerance: max_restarts=-1 (a dead actor comes
        # back) and max_task_retries=-1 (its batch runs again). Passing them ourselves would use
        # ray_remote_args, deprecated since Ray 2.60; tests/test_engine_ray.py kills an actor.
    )


def _gpus_per_actor(ray: Any, ray_options: RayOptions) -> int:
    """1 for CUDA actors (``--device cuda*``, or ``auto`` on a cluster with GPUs), else 0."""
    if ray_options.device.startswith("cuda"):
        return 1
    if ray_options.device == "auto":
        return 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return 0


def _check_room(ray: Any, actors: int, gpus: int) -> None:
    """CPU actors take one CPU each and decoding needs some left, or the run would wait forever."""
    cpus = ray.cluster_resources().get("CPU", 0)
    if not gpus and actors >= cpus:
        raise ValueError(
            f"--actors {actors} needs more than {cpus:g} CPUs in the Ray cluster (decoding "
            f"runs beside the actors); use --actors {max(1, int(cpus) - 1)} or more nodes"
        )


def _decode_row(
    row: dict[str, Any],
    size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cwd: str,
    limits: Limits,
) -> dict[str, Any]:
    """One input -> its normalised image (3, H, W) float32 and pixels (H0, W0, 3) uint8, or the
    reason it could not be read under ``limits`` (then both are placeholders)."""
    _enter(cwd)
    item = _input_of(row)
    loaded = load_image(int(row["index"]), item, size, mean, std, limits)
    if loaded.tensor is None or loaded.pixels is None:
        tensor = np.zeros((3, *size), dtype=np.float32)
        pixels = np.zeros((1, 1, 3), dtype=np.uint8)
    else:
        tensor, pixels = loaded.tensor.numpy(), loaded.pixels.numpy()
    return {**row, "tensor": tensor, "pixels": pixels, "error": loaded.error or ""}


def _enter(cwd: str) -> None:
    """Work in the driver's folder, where it exists, so relative inputs and OUT mean the same."""
    if os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)


def _input_of(row: dict[str, Any]) -> InputImage:
    return InputImage(Path(os.fsdecode(row["path"])), Path(os.fsdecode(row["relative"])))


class MapActor:
    """A model actor: loads the explainer once, then explains and writes batch after batch."""

    def __init__(
        self, factory: ExplainerFactory, device: str, options: RunOptions, cwd: str
    ) -> None:
        _enter(cwd)
        self.explainer = factory(device)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decoded rows -> one pickled event per row, after the maps are written."""
        events: list[Event] = []
        good: list[LoadedImage] = []
        for n, index in enumerate(batch["index"]):
            row = {"path": batch["path"][n], "relative": batch["relative"][n]}
            item = _input_of(row)
            if batch["error"][n]:
                events.append(Failure(str(item.path), str(batch["error"][n])))
                continue
            tensor = torch.from_numpy(np.array(batch["tensor"][n], dtype=np.float32))  # (3, H, W)
            pixels = torch.from_numpy(np.array(batch["pixels"][n], dtype=np.uint8))  # (H0, W0, 3)
            good.append(LoadedImage(int(index), item, tensor, pixels, None))
        if good:
            images = torch.stack([g.tensor for g in good if g.tensor is not None])  # (N, 3, H, W)
            events.extend(pipeline.explain_batch(self.explainer, good, images, self.options))
        out = np.empty(len(events), dtype=object)
        out[:] = [pickle.dumps(event) for event in events]
        return {"event": out}
