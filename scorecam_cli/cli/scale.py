"""Scale-out options of ``run`` and ``eval``: ``--shard I/N``, ``--engine``, ``--actors``,
``--ray-address``, ``--npy-size`` and ``--npy-dtype``. Click only; heavy imports inside functions.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scorecam_cli.choices import ENGINES, NPY_DTYPES, NPY_SIZES
from scorecam_cli.cli.common import Fatal, make_explainer

if TYPE_CHECKING:
    from scorecam_cli.explainer import Explainer
    from scorecam_cli.images import InputImage
    from scorecam_cli.pipeline import StopRequest
    from scorecam_cli.shards import Shard
    from scorecam_cli.writing import Event, RunOptions

F = TypeVar("F", bound=Callable[..., Any])


class ShardType(click.ParamType):
    """``I/N``: shard I (0-based) of N."""

    name = "I/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from scorecam_cli.shards import Shard, parse_shard

        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def shard_option(function: F) -> F:
    """``--shard I/N``: keep only the inputs of shard I of N (stable hash of the relative path)."""
    return click.option(
        "--shard",
        type=ShardType(),
        default=None,
        help="Only the inputs of shard I of N (0 <= I < N), by a stable hash of each input's "
        "relative path: N jobs with I = 0..N-1 cover every input once. run writes the manifest "
        "part manifest.I-of-N.jsonl.",
    )(function)


def scale_options(function: F) -> F:
    """The options of ``run`` for sharding, the engine and the stored maps."""
    options = [
        shard_option,
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="local",
            show_default=True,
            help="local: this process. ray: a Ray cluster (extra scorecam-cli[ray]); decoding "
            "as Ray tasks, the model in --actors actors (one GPU each on CUDA), outputs written "
            "by the actors to OUTPUT, which every node must share.",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="Ray cluster to join (e.g. auto, or ray://HOST:10001). Default: a local one.",
        ),
        click.option(
            "--actors",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="--engine ray: model actors (GPUs on CUDA).",
        ),
        click.option(
            "--npy-size",
            type=click.Choice(NPY_SIZES),
            default="original",
            show_default=True,
            help="Size of the raw .npy map: the image's, the model input's, or the layer's "
            "(lossless, e.g. 7x7; upsample with scorecam_cli.render.upsample_layer_map: "
            "bilinear, align_corners=False, to the manifest's original_size).",
        ),
        click.option(
            "--npy-dtype",
            type=click.Choice(NPY_DTYPES),
            default="float32",
            show_default=True,
            help="Number type of the .npy map (float16: half the bytes, ~3 digits).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@dataclass(frozen=True)
class ScaleOptions:
    shard: Shard | None
    engine: str
    ray_address: str | None
    actors: int
    npy_size: str
    npy_dtype: str

    @classmethod
    def pop(cls, opts: dict[str, Any]) -> ScaleOptions:
        """Take this group's values out of a command's ``**opts``."""
        return cls(**{name: opts.pop(name) for name in cls.__dataclass_fields__})

    def run_options(self) -> dict[str, Any]:
        """The RunOptions fields these options set."""
        from scorecam_cli.manifest import MANIFEST_NAME, part_name

        shard = self.shard
        name = part_name(shard.index, shard.count) if shard else MANIFEST_NAME
        return {"manifest_name": name, "npy_size": self.npy_size, "npy_dtype": self.npy_dtype}


def driver_explainer(scale: ScaleOptions, **rebuild: Any) -> Explainer:
    """The explainer of this process, from make_explainer's arguments ``rebuild``: on the CPU
    for the Ray engine's driver (the actors hold the model on their own devices), else where
    ``--device`` says."""
    driver = scale.engine == "ray"
    opts = {**rebuild["opts"], "device": "cpu"} if driver else rebuild["opts"]
    # the Ray engine's actors check the precision on their own devices
    return make_explainer(**{**rebuild, "opts": opts}, check_precision=not driver)


def events(
    scale: ScaleOptions,
    explainer: Explainer,
    inputs: Iterable[InputImage],
    options: RunOptions,
    rebuild: dict[str, Any],
    stop: StopRequest | None = None,
) -> Iterator[Event]:
    """The chosen engine's events; ``rebuild`` holds make_explainer's arguments for the actors.
    ``stop`` ends the run early (Ctrl-C): the local engine after reporting every map written,
    the Ray engine at the next input it hears of."""
    from scorecam_cli.pipeline import run as run_local
    from scorecam_cli.shards import in_shard

    if scale.engine == "local":
        yield from run_local(explainer, in_shard(inputs, scale.shard), options, stop)
        return
    from scorecam_cli.engines import ray as ray_engine
    from scorecam_cli.errors import ScoreCamError

    factory = functools.partial(_actor_explainer, {**rebuild, "layer": str(explainer.layer)})
    ray_options = ray_engine.RayOptions(
        address=scale.ray_address,
        actors=scale.actors,
        device=rebuild["opts"]["device"],
        env_vars=_worker_env(),
    )
    try:
        for event in ray_engine.run(
            explainer, factory, in_shard(inputs, scale.shard), options, ray_options
        ):
            yield event
            if stop is not None and stop.requested:  # Ctrl-C: stop at the next finished input
                return
    except (ScoreCamError, ValueError) as exc:
        raise Fatal(str(exc)) from None


def _actor_explainer(rebuild: dict[str, Any], device: str) -> Explainer:
    """make_explainer inside a Ray actor, on the device the actor was given."""
    opts = {**rebuild["opts"], "device": device}
    return make_explainer(**{**rebuild, "opts": opts})


def _worker_env() -> dict[str, str]:
    """PYTHONPATH for workers of a local cluster: ours, and this folder (``module:factory``)."""
    paths = [os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
