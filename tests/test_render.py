"""Tests for scorecam_cli.render: colour maps, resizing, overlays and atomic writers."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scorecam_cli import render
from scorecam_cli.errors import OutputWrite


def _leftovers(folder: Path) -> list[str]:
    """Names of temp files the atomic writer may have left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_colormaps_are_named_by_lower_case_name() -> None:
    for name in ("jet", "turbo", "viridis", "inferno"):
        assert render.COLORMAPS[name] == getattr(cv2, f"COLORMAP_{name.upper()}")
    assert render.colormap_id("JET") == cv2.COLORMAP_JET
    assert render.colormap_id("Viridis") == cv2.COLORMAP_VIRIDIS


def test_unknown_colormap_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown colormap 'nope'") as info:
        render.colormap_id("nope")
    assert "jet" in str(info.value) and "turbo" in str(info.value)


@pytest.mark.parametrize(("source", "target"), [((7, 7), (224, 300)), ((7, 9), (13, 5))])
def test_resize_map_matches_torch_bilinear(
    source: tuple[int, int], target: tuple[int, int]
) -> None:
    cam = np.random.default_rng(0).normal(size=source).astype(np.float32)
    ours = render.resize_map(cam, target)
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(cam)[None, None], size=target, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    assert ours.shape == target and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_resize_map_keeps_raw_values() -> None:
    cam = np.full((3, 4), 7.5, dtype=np.float64)
    np.testing.assert_array_equal(render.resize_map(cam, (6, 8)), np.full((6, 8), 7.5))


def test_normalise() -> None:
    np.testing.assert_array_equal(render.normalise(np.full((4, 5), 3.0)), np.zeros((4, 5)))
    ramp = render.normalise(np.array([[2.0, 4.0], [6.0, np.nan]]))
    assert ramp.dtype == np.float32
    np.testing.assert_allclose(ramp, [[0.0, 0.5], [1.0, 0.0]])
    np.testing.assert_array_equal(render.normalise(np.full((2, 2), np.nan)), np.zeros((2, 2)))


def test_heatmap_is_bgr_colour_map() -> None:
    cam = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    heat = render.heatmap(cam, "jet")
    assert heat.shape == (3, 4, 3) and heat.dtype == np.uint8
    expected = cv2.applyColorMap(np.round(cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    np.testing.assert_array_equal(heat, expected)
    np.testing.assert_array_equal(heat[0, 0], [128, 0, 0])  # jet starts dark blue (BGR)


def test_overlay_blends_rgb_image_with_bgr_heat() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    heat = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(render.overlay(image, heat, 0.0), image[..., ::-1])
    np.testing.assert_array_equal(render.overlay(image, heat, 1.0), heat)
    half = render.overlay(image, heat, 0.5).astype(np.int16)
    expected = (image[..., ::-1].astype(np.int16) + heat) / 2
    assert np.abs(half - expected).max() <= 1


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_overlay_rejects_bad_alpha(alpha: float) -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="alpha"):
        render.overlay(image, image, alpha)


def test_overlay_rejects_size_mismatch() -> None:
    with pytest.raises(ValueError, match="must both be"):
        render.overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2, 3), np.uint8), 0.5)


def test_write_png_round_trip_creates_folders(tmp_path: Path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    path = tmp_path / "a" / "b" / "x.png"
    render.write_png(path, image)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), image)
    assert _leftovers(path.parent) == []
    render.write_png(path, image[::-1])  # replacing an existing file
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), image[::-1])


def test_write_npy_round_trip(tmp_path: Path) -> None:
    array = np.random.default_rng(3).normal(size=(4, 7)).astype(np.float32)
    path = tmp_path / "deep" / "x.npy"
    render.write_npy(path, array)
    loaded = np.load(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)
    assert _leftovers(path.parent) == []


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    def fail(*args: object) -> None:
        raise failure

    monkeypatch.setattr(os, "replace", fail)
    path = tmp_path / "x.png"
    expected = OutputWrite if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        render.write_png(path, np.zeros((3, 3, 3), np.uint8))
    if expected is OutputWrite:
        assert str(info.value) == f"{path}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_interrupt_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = open

    class Interrupting:
        def __init__(self, *args: object) -> None:
            self.file = real_open(*args)  # type: ignore[call-overload]

        def __enter__(self) -> Interrupting:
            return self

        def __exit__(self, *args: object) -> None:
            self.file.close()

        def write(self, data: bytes) -> None:
            self.file.write(bytes(data)[:10])  # a partial write, then Ctrl-C
            raise KeyboardInterrupt

    monkeypatch.setattr(render, "open", Interrupting, raising=False)
    with pytest.raises(KeyboardInterrupt):
        render.write_npy(tmp_path / "x.npy", np.zeros(100))
    assert list(tmp_path.iterdir()) == []


def test_failed_replacement_keeps_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.npy"
    render.write_npy(path, np.arange(5))
    before = path.read_bytes()

    def fail(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputWrite, match="Permission denied"):
        render.write_npy(path, np.arange(50))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_unwritable_destination_is_output_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputWrite, match=str(blocker / "x.png")):
        render.write_png(blocker / "x.png", np.zeros((2, 2, 3), np.uint8))
    assert blocker.read_text() == "not a folder"
