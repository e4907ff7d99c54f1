"""Scale-out options of ``run`` and ``eval``: ``--shard I/N``, ``--engine``, ``--actors``,
``--ray-address``, ``--npy-size`` and ``--npy-dtype``. Click only; heavy imports inside functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scorecam_cli.choices import NPY_DTYPES, NPY_SIZES
from scorecam_cli.cli.common import option_group
from scorecam_cli.engines import ENGINES

if TYPE_CHECKING:
    from scorecam_cli.engines import Cluster
    from scorecam_cli.shards import Shard

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


@dataclass(frozen=True)
class ScaleOptions:
    """--shard, --engine, --ray-address, --actors, --npy-size and --npy-dtype."""

    shard: Shard | None
    engine: str
    ray_address: str | None
    actors: int
    npy_size: str
    npy_dtype: str

    def run_options(self) -> dict[str, Any]:
        """The RunOptions fields these options set."""
        from scorecam_cli.manifest import MANIFEST_NAME, part_name

        shard = self.shard
        name = part_name(shard.index, shard.count) if shard else MANIFEST_NAME
        return {"manifest_name": name, "npy_size": self.npy_size, "npy_dtype": self.npy_dtype}

    def cluster(self) -> Cluster:
        from scorecam_cli.engines import Cluster

        return Cluster(self.ray_address, self.actors)


scale_options = option_group(
    lambda **values: {"scale": ScaleOptions(**values)},
    [
        shard_option,
        click.option(
            "--engine",
            type=click.Choice(list(ENGINES)),
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
    ],
)
"""The options of ``run`` for sharding, the engine and the stored maps -> the argument ``scale``
(ScaleOptions)."""
