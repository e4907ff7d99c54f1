"""--keep-aspect: the sizes it computes, the maps' shapes, batches of one size, the refusal of
fixed-size models, and the option reaching the Ray engine's decode tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import TINY, cli, errors, records
from test_cli import write_image
from torchvision.models import VisionTransformer

from scorecam_cli.aspect import AspectResize, aspect_spec, grouped_inputs
from scorecam_cli.errors import BadInputSize
from scorecam_cli.explainer import build_explainer
from scorecam_cli.images import find_inputs
from scorecam_cli.spec import ComputeSpec, ExplainSpec, ModelSpec
from scorecam_cli.stages import decoded_batches
from scorecam_cli.writing import DecodeOptions

TINY_SPEC = ExplainSpec(ModelSpec("tinymodels:tiny"), input_size=(64, 64), keep_aspect=True)


def tiny_vit() -> VisionTransformer:
    """A 32x32 ViT (patch 8): its position embeddings take 16 patches, no other number."""
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16,
        num_classes=5,
    ).eval()  # fmt: skip


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ((50, 50), (224, 224)),  # square stays square
        ((100, 300), (224, 448)),  # 3:1 is capped at 2x the short side
        ((300, 100), (448, 224)),  # tall: the same, transposed
        ((224, 250), (224, 256)),  # 250 -> the short side plus one stride of 32
        ((240, 320), (224, 288)),  # 298.7 -> 224 + 2 strides (2.33 rounds to 2)
        ((400, 600), (224, 352)),  # 336 -> 224 + 4 strides (3.5 rounds up)
    ],
)
def test_short_side_to_the_input_size_long_side_rounded_to_the_stride_and_capped(
    original: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert AspectResize(224, 32)(original) == expected


def test_the_cap_is_whole_strides_within_twice_the_short_side() -> None:
    assert AspectResize(64, 7).longest == 64 + 7 * 9  # 127 <= 128 < 134
    assert AspectResize(64, 7)((10, 1000)) == (64, 127)
    assert AspectResize(64, 4)((48, 80)) == (64, 108)  # 106.7 -> 64 + 11 strides of 4


def test_the_stride_comes_from_the_layer_s_map_in_the_dry_run() -> None:
    explainer = build_explainer(TINY_SPEC)
    assert explainer.aspect == AspectResize(64, 4)  # 64 input, relu map 16x16
    assert explainer.settings()["keep_aspect"] is True
    assert build_explainer(ExplainSpec(ModelSpec("tinymodels:tiny"))).aspect is None


def test_wide_and_tall_maps_follow_the_aspect(tmp_path: Path) -> None:
    wide = write_image(tmp_path / "in" / "wide.png", height=48, width=80)
    tall = write_image(tmp_path / "in" / "tall.png", height=80, width=48)
    out = tmp_path / "out"
    ran = cli("run", wide, tall, "-o", out, *TINY, "--keep-aspect", "--npy-size", "input")
    assert ran.returncode == 0, ran.stderr
    assert len(records(ran.stdout)) == 2
    shapes = {path.name.split(".")[0]: np.load(path).shape for path in out.glob("*.npy")}
    assert shapes == {"wide": (64, 108), "tall": (108, 64)}
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [line["options"]["keep_aspect"] for line in lines] == [True, True]
    squashed = cli("run", wide, "-o", tmp_path / "sq", *TINY, "--npy-size", "input")
    assert squashed.returncode == 0, squashed.stderr
    assert [np.load(p).shape for p in (tmp_path / "sq").glob("*.npy")] == [(64, 64)]


def test_eval_takes_keep_aspect(tmp_path: Path) -> None:
    wide = write_image(tmp_path / "wide.png", height=48, width=80)
    tall = write_image(tmp_path / "tall.png", height=80, width=48)
    ran = cli(
        "eval", wide, tall, *TINY, "--keep-aspect", "--method", "gradcam", "--steps", "4",
        "--format", "jsonl",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["images"] == 2


def test_batches_hold_one_size_and_every_input_once_in_a_fixed_order(tmp_path: Path) -> None:
    """Alternating wide and tall images (and a broken file) in batches of 2: every batch holds
    one size, each is full but the last of a size, and the order is the same twice."""
    folder = tmp_path / "in"
    for n in range(5):
        write_image(folder / f"w{n}.png", height=48, width=80)
        write_image(folder / f"t{n}.png", height=80, width=48)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    explainer = build_explainer(TINY_SPEC)
    decode = DecodeOptions(images_per_batch=2, workers=0)

    def batches() -> list[tuple[list[str], list[str], tuple[int, ...]]]:
        return [
            (
                [f.input for f in failures],
                [item.input.path.name for item in good],
                tuple(batch.shape) if batch is not None else (),
            )
            for failures, good, batch in decoded_batches(
                explainer, find_inputs([str(folder)]), decode
            )
        ]

    first = batches()
    assert first == batches()
    names = [name for _, good, _ in first for name in good]
    failed = [name for failures, _, _ in first for name in failures]
    assert sorted(names) == sorted(p.name for p in folder.iterdir() if p.name != "broken.png")
    assert [Path(f).name for f in failed] == ["broken.png"]
    shapes = [shape for _, good, shape in first if good]
    assert all(shape[0] <= 2 for shape in shapes)
    assert sorted(shape[2:] for shape in shapes) == [(64, 108)] * 3 + [(108, 64)] * 3
    assert sum(shape[0] == 1 for shape in shapes) == 2  # one short batch per size, at the end
    for _, good, _ in first:
        assert len({name[0] for name in good}) <= 1  # w* and t* never share a batch


def test_grouping_releases_full_runs_and_keeps_the_input_order_within_a_size(
    tmp_path: Path,
) -> None:
    paths = [
        write_image(tmp_path / f"{n}.png", *((48, 80) if n % 3 else (80, 48))) for n in range(7)
    ]
    inputs = list(find_inputs([str(p) for p in paths]))
    order = [item.path.name for item in grouped_inputs(inputs, AspectResize(64, 4), 2)]
    assert order == ["1.png", "2.png", "0.png", "3.png", "4.png", "5.png", "6.png"]


def test_a_vit_is_refused_in_one_line(tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png")
    vit = ["--model", "test_keep_aspect:tiny_vit", "--input-size", "32", "--workers", "0"]
    ran = cli("run", image, "-o", tmp_path / "out", *vit, "--keep-aspect")
    assert ran.returncode == 2, ran.stderr
    assert ran.stdout == b""
    (line,) = errors(ran.stderr)
    assert "--keep-aspect" in line and "32x32" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.npy"))
    assert cli("run", image, "-o", tmp_path / "ok", *vit).returncode == 0  # without: explained


def test_fixed_size_backends_and_onnx_files_are_refused() -> None:
    with pytest.raises(BadInputSize, match="--backend torch"):
        aspect_spec(ExplainSpec(compute=ComputeSpec(backend="onnxruntime"), keep_aspect=True))
    with pytest.raises(BadInputSize, match="ONNX file"):
        aspect_spec(ExplainSpec(ModelSpec("model.onnx"), keep_aspect=True))
    assert aspect_spec(ExplainSpec(keep_aspect=True)).compute.backend == "torch"
    assert aspect_spec(ExplainSpec()).compute.backend == "auto"


def test_ray_decode_tasks_receive_the_rule(tmp_path: Path) -> None:
    """The Ray engine hands its decode tasks the explainer's rule, so its images keep their
    aspect as the local engine's do; a failed row's placeholder stays square."""
    from scorecam_cli.engines import ray as ray_engine
    from scorecam_cli.images import Limits

    image = write_image(tmp_path / "a.png", height=48, width=80)
    row = {"index": 0, "path": os.fsencode(image), "relative": b"a.png"}
    args = (AspectResize(64, 4), (0.5,) * 3, (0.5,) * 3, os.getcwd())
    decoded = ray_engine._decode_row(row, *args, Limits())
    assert decoded["error"] == "" and decoded["tensor"].shape == (3, 64, 108)
    refused = ray_engine._decode_row(row, *args, Limits(max_pixels=1000))
    assert "--max-pixels" in refused["error"] and refused["tensor"].shape == (3, 64, 64)
