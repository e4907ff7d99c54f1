"""``--npy-size`` and ``--npy-dtype``: smaller maps that give the original one back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_cli import TINY, write_image

from scorecam_cli.cli import main
from scorecam_cli.manifest import read_manifest
from scorecam_cli.npy_maps import stored_map
from scorecam_cli.render import upsample_layer_map

NPY_HEADER = 128  # bytes: numpy's .npy header of a 2-D float array, padded to 64


@pytest.mark.parametrize(("small", "size"), [((7, 7), (750, 1000)), ((16, 12), (33, 95))])
def test_upsample_layer_map_is_torch_bilinear_without_corner_alignment(
    small: tuple[int, int], size: tuple[int, int]
) -> None:
    cam = np.random.default_rng(0).random(small, dtype=np.float32) * 5
    expected = F.interpolate(
        torch.from_numpy(cam)[None, None], size=size, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    got = upsample_layer_map(cam.astype(np.float16).astype(np.float32), size)
    assert got.shape == size and got.dtype == np.float32
    np.testing.assert_allclose(upsample_layer_map(cam, size), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-3)  # from a float16 map


def test_float16_refuses_a_map_it_cannot_hold() -> None:
    cam = np.full((2, 2), 1e6, dtype=np.float32)
    with pytest.raises(ValueError, match="float16"):
        stored_map(cam, cam, (4, 4), "layer", "float16")
    assert stored_map(cam, cam, (4, 4), "layer", "float32").dtype == np.float32


def run(folder: Path, out: Path, *args: str) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(main, ["run", str(folder), "-o", str(out), *TINY, *args])
    assert result.exit_code == 0, result.stderr
    return {str(e["npy"]): e for e in read_manifest(out).entries}


def test_layer_size_maps_upsample_to_the_original_ones(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_image(folder / "wide.png", height=30, width=100)
    write_image(folder / "tall.png", height=90, width=41)
    original = run(folder, tmp_path / "original")
    layer = run(folder, tmp_path / "layer", "--npy-size", "layer")
    small = run(folder, tmp_path / "layer16", "--npy-size", "layer", "--npy-dtype", "float16")
    inputs = run(folder, tmp_path / "input", "--npy-size", "input")
    assert original.keys() == layer.keys() == small.keys() == inputs.keys() and len(original) == 2
    for name, entry in layer.items():
        assert entry["options"]["npy_size"] == "layer"  # type: ignore[index]
        size = tuple(entry["original_size"])  # type: ignore[arg-type]
        full = np.load(tmp_path / "original" / name)
        assert full.shape == size and full.dtype == np.float32
        kept = np.load(tmp_path / "layer" / name)
        assert kept.shape == (16, 16) and kept.dtype == np.float32  # TinyNet's layer at 64 px
        np.testing.assert_allclose(upsample_layer_map(kept, size), full, rtol=1e-5, atol=1e-5)
        half = np.load(tmp_path / "layer16" / name)
        assert half.dtype == np.float16
        assert (tmp_path / "layer16" / name).stat().st_size == NPY_HEADER + 16 * 16 * 2
        np.testing.assert_allclose(half.astype(np.float32), kept, rtol=1e-3, atol=1e-3)
        assert np.load(tmp_path / "input" / name).shape == (64, 64)


def test_float16_original_size_is_half_the_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_image(folder / "photo.png", height=75, width=100)
    args = ["-o", str(tmp_path / "o"), "--npy-dtype", "float16", "--format", "jsonl"]
    result = CliRunner().invoke(main, ["run", str(folder), *TINY, *args])
    assert result.exit_code == 0, result.stderr
    npy = Path(json.loads(result.stdout)["npy"])
    assert npy.stat().st_size == NPY_HEADER + 75 * 100 * 2
    assert np.load(npy).dtype == np.float16
