"""The Ray engine (``--engine ray``): the local pipeline's pieces spread over a Ray cluster.

The driver (this process) finds the inputs and applies ``--skip-existing`` / ``--overwrite`` as
the local engine does; the inputs left become a Ray Dataset. Decoding runs as Ray tasks; the
model runs in a pool of actors (``map_batches`` with a callable class: one model load per actor,
one GPU each on a GPU cluster). Each actor builds its explainer from the job's spec
(:func:`scorecam_cli.explainer.build_explainer`, on its own device), explains its batches and
writes the outputs itself (atomic writes, to ``OUT`` on a file system every node shares) with
:func:`scorecam_cli.stages.explain_batch`, and sends back one event per input. The driver
yields those events as they arrive (completion order, not input order) and appends the manifest,
so stdout records, manifest lines, per-file errors and exit codes are those of the local engine.
Unlike the local engine, a map's manifest line follows its ``.npy`` (written by an actor, listed
by the driver): a driver killed in between leaves that map on disk without its line.

An actor that dies is restarted and its batch retried (Ray Data's actor defaults:
``max_restarts=-1``, ``max_task_retries=-1``); a batch written twice is written atomically both
times. Ray is imported only here.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorecam_cli.aspect import AspectResize, grouped_inputs, same_size_groups
from scorecam_cli.engines import Cluster, EngineJob
from scorecam_cli.errors import ScoreCamError
from scorecam_cli.events import Event, Explained, Failure
from scorecam_cli.explainer import Explainer, build_explainer
from scorecam_cli.images import InputImage, Limits, LoadedImage, load_image
from scorecam_cli.manifest import ManifestWriter, entry_from_record
from scorecam_cli.spec import ExplainSpec
from scorecam_cli.stages import StopRequest, accepted_inputs, explain_batch, run_settings
from scorecam_cli.writing import RunOptions

__all__ = ["RayFailure", "RayUnavailable", "actor_explainer", "driver_explainer", "run"]

# Builds the explainer inside an actor, on the device it is given ("cuda" or "cpu").
ExplainerFactory = Callable[[str], Explainer]


class RayUnavailable(ScoreCamError):
    """``--engine ray`` needs the extra: ``pip install 'scorecam-cli[ray]'``."""


class RayFailure(ScoreCamError):
    """The cluster could not finish the run (e.g. an actor could not load the model)."""


def driver_explainer(spec: ExplainSpec) -> Explainer:
    """The driver's explainer, on the CPU: it decides what to skip and gives the size and the
    normalisation (the actors hold the model on their own devices and check the precision)."""
    return build_explainer(_on_device(spec, "cpu"), check_precision=False)


def actor_explainer(spec: ExplainSpec, device: str) -> Explainer:
    """An actor's explainer: ``spec`` on the ``device`` the actor was given."""
    return build_explainer(_on_device(spec, device))


def _on_device(spec: ExplainSpec, device: str) -> ExplainSpec:
    return replace(spec, compute=replace(spec.compute, device=device))


def run(
    job: EngineJob,
    inputs: Iterable[InputImage],
    stop: StopRequest | None = None,
    factory: ExplainerFactory | None = None,
) -> Iterator[Event]:
    """Explain ``inputs`` on a Ray cluster: one event per input, as each batch finishes.

    ``job.explainer`` (this process's) decides what to skip and gives the size and
    normalisation; the actors build theirs from ``job.spec`` with the driver's layer (or with
    ``factory(device)``, for tests). ``stop`` ends the run at the next finished input.
    """
    ray = _import_ray()
    explainer, options = job.explainer, job.options
    if factory is None:
        layer = replace(job.spec.layer, name=str(explainer.layer))
        factory = functools.partial(actor_explainer, replace(job.spec, layer=layer))
    todo: list[InputImage] = []
    for item in accepted_inputs(inputs, options, explainer):
        if isinstance(item, InputImage):
            todo.append(item)
        else:
            yield item
    if not todo:
        return
    if explainer.aspect is not None:  # batches of one size, as the local engine's
        todo = list(grouped_inputs(todo, explainer.aspect, options.images_per_batch))
    settings = run_settings(explainer, options)
    device = job.spec.compute.device
    with (
        _native_logs_hidden(_quiet()),
        _cluster(ray, job.cluster),
        ManifestWriter(options.output_dir / options.manifest_name) as manifest,
    ):
        dataset = _dataset(ray, explainer, factory, todo, options, job.cluster, device)
        for row in _interruptible(_rows(ray, dataset), stop):
            event: Event = pickle.loads(row["event"])
            if isinstance(event, Explained):
                for record in event.records:
                    manifest.append(
                        entry_from_record(
                            asdict(record), options.output_dir, event.original_size, settings
                        )
                    )
            yield event
            if stop is not None and stop.requested:  # Ctrl-C: stop at the next finished input
                return


def _interruptible(
    rows: Iterator[dict[str, Any]], stop: StopRequest | None
) -> Iterator[dict[str, Any]]:
    """``rows``, with Ctrl-C free to interrupt the wait for the next one (nothing is lost
    there), never the handling of one."""
    while True:
        if stop is not None:
            stop.computing = True
        try:
            row = next(rows)
        except StopIteration:
            return
        finally:
            if stop is not None:
                stop.computing = False
        yield row


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
    quiet = _quiet()
    logging.getLogger("ray").setLevel(logging.ERROR if quiet else logging.WARNING)
    if quiet:
        _quiet_ray_console()
    return ray


def _quiet() -> bool:
    """--quiet: only our errors on stderr."""
    return not logging.getLogger("scorecam_cli").isEnabledFor(logging.INFO)


@contextmanager
def _native_logs_hidden(active: bool) -> Iterator[None]:
    """Meanwhile, when ``active``, what native code writes to file descriptor 2 (the log lines
    of Ray's core worker in this process, e.g. ``core_worker.cc: ... E``) goes to /dev/null,
    while Python's stderr (our error lines and logs) keeps the real stderr. Ray's own log files
    keep everything."""
    if not active:
        yield
        return
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
    except (OSError, ValueError):  # stderr closed: nothing to hide
        yield
        return
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(terminal, "w", buffering=1, errors="backslashreplace")
    ours = logging.getLogger("scorecam_cli").handlers
    moved = [h for h in ours if isinstance(h, logging.StreamHandler) and h.stream is python_stderr]
    for handler in moved:
        handler.setStream(sys.stderr)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        for handler in moved:
            handler.setStream(python_stderr)
        sys.stderr.close()
        sys.stderr = python_stderr


def _quiet_ray_console() -> None:
    """Only Ray's errors on stderr; its log files keep everything."""
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


@contextmanager
def _cluster(ray: Any, cluster: Cluster) -> Iterator[None]:
    """Connect to ``cluster.address`` or start a local cluster, unless this process is already
    connected; a cluster started here is shut down on exit. Worker logs stay out of our
    stdout."""
    if ray.is_initialized():
        yield
        return
    ray.init(
        address=cluster.address,
        log_to_driver=False,
        include_dashboard=False,
        runtime_env={"env_vars": _worker_env()},
        logging_level=logging.getLogger("ray").getEffectiveLevel(),
    )
    try:
        yield
    finally:
        ray.shutdown()


def _worker_env() -> dict[str, str]:
    """PYTHONPATH for workers of a local cluster: ours, and this folder (``module:factory``)."""
    paths = [os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _dataset(
    ray: Any,
    explainer: Explainer,
    factory: ExplainerFactory,
    todo: list[InputImage],
    options: RunOptions,
    cluster: Cluster,
    device: str,
) -> Any:
    """inputs -> decoded rows (Ray tasks) -> events, one row each (the actor pool)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own bar of events
    gpus = _gpus_per_actor(ray, device)
    _check_room(ray, cluster.actors, gpus)
    prep = explainer.model.preprocessing
    rows = [
        {"index": n, "path": os.fsencode(item.path), "relative": os.fsencode(item.relative)}
        for n, item in enumerate(todo)
    ]
    decoded = ray.data.from_items(rows).map(
        _decode_row,
        fn_kwargs={
            "size": explainer.aspect or explainer.size,  # --keep-aspect: a rule per image
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
        compute=ray.data.ActorPoolStrategy(size=cluster.actors),
        num_cpus=1,
        num_gpus=gpus,
        # Ray Data's actor defaults do the fault tolerance: max_restarts=-1 (a dead actor comes
        # back) and max_task_retries=-1 (its batch runs again). Passing them ourselves would use
        # ray_remote_args, deprecated since Ray 2.60; tests/test_engine_ray.py kills an actor.
    )


def _gpus_per_actor(ray: Any, device: str) -> int:
    """1 for CUDA actors (``--device cuda*``, or ``auto`` on a cluster with GPUs), else 0."""
    if device.startswith("cuda"):
        return 1
    if device == "auto":
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
    size: tuple[int, int] | AspectResize,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cwd: str,
    limits: Limits,
) -> dict[str, Any]:
    """One input -> its normalised image (C, H, W) float32 and pixels (H0, W0, 3) uint8, or the
    reason it could not be read under ``limits`` (then both are placeholders). ``size`` is the
    model's input size, or the ``--keep-aspect`` rule that gives it per image."""
    _enter(cwd)
    item = _input_of(row)
    loaded = load_image(int(row["index"]), item, size, mean, std, limits)
    if loaded.tensor is None or loaded.pixels is None:
        square = size.square if isinstance(size, AspectResize) else size
        tensor = np.zeros((len(mean), *square), dtype=np.float32)
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
        for group in same_size_groups(good):  # one group unless --keep-aspect
            images = torch.stack([g.tensor for g in group if g.tensor is not None])  # (N, 3, H, W)
            events.extend(explain_batch(self.explainer, group, images, self.options))
        out = np.empty(len(events), dtype=object)
        out[:] = [pickle.dumps(event) for event in events]
        return {"event": out}
