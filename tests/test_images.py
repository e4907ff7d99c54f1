"""Tests for scorecam_cli.images: finding inputs, decoding, preprocessing and batching."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from scorecam_cli.errors import ImageRead
from scorecam_cli.image_headers import FORMATS
from scorecam_cli.images import (
    IMAGE_SUFFIXES,
    InputImage,
    find_inputs,
    load_batches,
    preprocess,
    read_image,
)

UNDECODABLE = "not an image OpenCV can decode"
NO_SIZE = f"not a {FORMATS} image (no image size in its header)"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _jpeg_bytes(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 BGR -> JPEG file bytes."""
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def _pattern(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: left half red, right half blue (RGB), so rotations are visible."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (255, 0, 0)
    image[:, width // 2 :] = (0, 0, 255)
    return image


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


# ---------------------------------------------------------------------------- find_inputs


def test_find_inputs_walks_folder_sorted_recursive(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in [
        "b.jpg",
        "a/z.PNG",
        "a/deep/y.tif",
        "a.b/c.webp",
        "a/.hidden.png",
        ".secret/x.jpg",
        "notes.txt",
        "A.JPEG",
        "noext",
    ]:
        _touch(root / name)
    found = list(find_inputs([str(root)]))
    assert [item.relative.as_posix() for item in found] == [
        "A.JPEG",
        "a/deep/y.tif",
        "a/z.PNG",
        "a.b/c.webp",
        "b.jpg",
    ]
    assert all(item.path == root / item.relative for item in found)


def test_find_inputs_files_and_missing_paths(tmp_path: Path) -> None:
    odd = _touch(tmp_path / "sub" / "photo.weird")
    missing = tmp_path / "gone" / "nope.jpg"
    found = list(find_inputs([str(odd), str(missing)]))
    assert found == [
        InputImage(odd, Path("photo.weird")),
        InputImage(missing, Path("nope.jpg")),
    ]


def test_find_inputs_stdin_paths_are_made_safe() -> None:
    lines = "./a/b.jpg\r\n\n   \n  /data/x.jpg  \n../up/c.png\na/../b.png\nplain.bmp"
    found = list(find_inputs(["-"], stdin=io.StringIO(lines)))
    assert [str(item.path) for item in found] == [
        "a/b.jpg",
        "/data/x.jpg",
        "../up/c.png",
        "a/../b.png",
        "plain.bmp",
    ]
    assert [item.relative.as_posix() for item in found] == [
        "a/b.jpg",
        "data/x.jpg",
        "__/up/c.png",
        "a/__/b.png",
        "plain.bmp",
    ]


def test_find_inputs_reads_stdin_lazily() -> None:
    def lines() -> Iterator[str]:
        yield "first.jpg\n"
        raise AssertionError("read past the first line")

    first = next(find_inputs(["-"], stdin=lines()))  # type: ignore[arg-type]
    assert first.relative == Path("first.jpg")


def test_image_suffixes_all_decode(tmp_path: Path) -> None:
    colour = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for suffix in sorted(IMAGE_SUFFIXES):
        source = colour[..., 0] if suffix in (".pbm", ".pgm") else colour
        ok, encoded = cv2.imencode(suffix, source)
        assert ok, suffix
        image = read_image(_touch(tmp_path / f"x{suffix}", encoded.tobytes()))
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8, suffix


# ---------------------------------------------------------------------------- read_image


def test_read_jpeg_is_rgb(tmp_path: Path) -> None:
    path = _touch(tmp_path / "x.jpg", _jpeg_bytes(_pattern(16, 32)[..., ::-1]))
    image = read_image(path)
    assert image.shape == (16, 32, 3)
    assert image[8, 2, 0] > 200 and image[8, 2, 2] < 50  # red on the left, in RGB order


def test_read_exif_rotated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    Image.fromarray(_pattern(20, 40)).save(path, exif=_exif_orientation(6))
    image = read_image(path)
    assert image.shape == (40, 20, 3)  # orientation 6: rotate 90 degrees clockwise
    assert image[2, 10, 0] > 200 and image[-3, 10, 2] > 200  # red on top, blue below


def test_read_exif_rotated_png_with_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[..., :3] = _pattern(20, 40)
    rgba[..., 3] = 255
    rgba[:, -5:, 3] = 0  # right edge transparent
    path = tmp_path / "rotated.png"
    Image.fromarray(rgba).save(path, exif=_exif_orientation(6))
    image = read_image(path)
    assert image.shape == (40, 20, 3)
    np.testing.assert_array_equal(image[2, 10], [255, 0, 0])
    np.testing.assert_array_equal(image[-1, 10], [255, 255, 255])  # transparent -> white
    np.testing.assert_array_equal(image[-8, 10], [0, 0, 255])


def test_read_grayscale_png(tmp_path: Path) -> None:
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    image = read_image(path)
    assert image.shape == (2, 2, 3)
    np.testing.assert_array_equal(image, np.repeat(gray[..., None], 3, axis=2))


def test_read_rgba_png_composites_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0]], [[0, 255, 0, 128], [9, 9, 9, 255]]])
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba.astype(np.uint8)).save(path)
    image = read_image(path)
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(image[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(image[1, 0], [127, 255, 127])
    np.testing.assert_array_equal(image[1, 1], [9, 9, 9])


def test_read_gray_alpha_png(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[0, 80]], np.uint8)).convert("LA").save(path)
    np.testing.assert_array_equal(read_image(path), [[[0, 0, 0], [80, 80, 80]]])


def test_read_palette_png(tmp_path: Path) -> None:
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    plain, transparent = tmp_path / "p.png", tmp_path / "pt.png"
    palette.save(plain)
    palette.save(transparent, transparency=1)
    np.testing.assert_array_equal(
        read_image(plain), [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 255, 0]]]
    )
    np.testing.assert_array_equal(
        read_image(transparent), [[[255, 0, 0], [255, 255, 255]], [[0, 0, 255], [255] * 3]]
    )


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_read_16_bit_is_scaled_not_truncated(tmp_path: Path, suffix: str) -> None:
    values = np.array([[65535, 32896], [257, 0], [384, 65407]], np.uint16)
    path = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(path), values)
    image = read_image(path)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], [[255, 128], [1, 0], [1, 255]])
    colour = tmp_path / f"colour{suffix}"
    assert cv2.imwrite(str(colour), np.stack([values, values // 2, values // 4], axis=2))
    np.testing.assert_array_equal(read_image(colour)[0, 0], [64, 127, 255])  # BGR -> RGB


def test_read_float_tiff(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "float.tiff"
    assert cv2.imwrite(str(path), np.stack([ramp, ramp, ramp], axis=2))
    image = read_image(path)
    assert image.shape == (3, 4, 3)
    np.testing.assert_array_equal(image[..., 0], np.round(ramp * 255))


def test_read_16_bit_rgba_png(tmp_path: Path) -> None:
    bgra = np.zeros((2, 3, 4), np.uint16)
    bgra[..., 2] = 65535  # red
    bgra[..., 3] = 65535
    bgra[0, 0, 3] = 0
    path = tmp_path / "deep_alpha.png"
    assert cv2.imwrite(str(path), bgra)
    image = read_image(path)
    np.testing.assert_array_equal(image[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(image[1, 2], [255, 0, 0])


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not a picture\n", NO_SIZE),
        ("garbage.png", b"\x89PNG\r\n\x1a\n" + bytes(100) + b"IEND", NO_SIZE),
        (
            "broken.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x02\0\0\0\x02\x08\x02\0\0\0junk" + b"IEND",
            UNDECODABLE,
        ),
    ],
)
def test_read_bad_files(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = _touch(tmp_path / name, data)
    with pytest.raises(ImageRead) as info:
        read_image(path)
    assert str(info.value) == f"{path}: {reason}"


def test_read_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageRead, match="no such file") as info:
        read_image(tmp_path / "missing.jpg")
    assert str(tmp_path / "missing.jpg") in str(info.value)
    with pytest.raises(ImageRead, match="is a folder") as info:
        read_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_read_truncated_jpeg_and_png(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpeg = _jpeg_bytes(image)
    png = cv2.imencode(".png", image)[1].tobytes()
    for name, data in [("cut.jpg", jpeg[: len(jpeg) * 6 // 10]), ("cut.png", png[:-20])]:
        path = _touch(tmp_path / name, data)
        with pytest.raises(ImageRead, match="truncated") as info:
            read_image(path)
        assert str(info.value).startswith(f"{path}: truncated")
    assert capfd.readouterr().err == ""  # OpenCV and libpng kept quiet


def test_truncated_jpeg_with_thumbnail_is_detected(tmp_path: Path) -> None:
    main = _jpeg_bytes(np.full((32, 32, 3), 90, np.uint8))
    thumbnail = _jpeg_bytes(np.zeros((8, 8, 3), np.uint8))  # has its own FF D9
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    whole = main[:2] + app1 + main[2:]
    assert read_image(_touch(tmp_path / "whole.jpg", whole)).shape == (32, 32, 3)
    with pytest.raises(ImageRead, match="truncated JPEG"):
        read_image(_touch(tmp_path / "cut.jpg", whole[:-10]))


def test_truncated_progressive_jpeg_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "progressive.jpg"
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, progressive=True)
    assert read_image(path).shape == (64, 64, 3)
    data = path.read_bytes()
    with pytest.raises(ImageRead, match="truncated JPEG"):
        read_image(_touch(tmp_path / "cut.jpg", data[: len(data) * 8 // 10]))


def test_jpeg_with_trailing_data_is_accepted(tmp_path: Path) -> None:
    data = _jpeg_bytes(np.full((8, 8, 3), 90, np.uint8)) + b"ftypmp4 trailing video\xff\xda"
    assert read_image(_touch(tmp_path / "motion.jpg", data)).shape == (8, 8, 3)


# ---------------------------------------------------------------------------- preprocess


def test_preprocess_shape_dtype_and_normalisation() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[..., 0] = 255
    image[..., 1] = 51
    out = preprocess(image, (20, 30), MEAN, STD)
    assert out.shape == (3, 20, 30) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = [(1.0 - MEAN[0]) / STD[0], (0.2 - MEAN[1]) / STD[1], -MEAN[2] / STD[2]]
    np.testing.assert_allclose(out.reshape(3, -1).mean(axis=1), expected, rtol=1e-5)
    np.testing.assert_allclose(out.reshape(3, -1).std(axis=1), 0, atol=1e-5)


def test_preprocess_resizes_whole_image_without_cropping() -> None:
    image = np.zeros((10, 40, 3), np.uint8)
    image[:, :4] = 255  # a stripe at the far left edge survives (no centre crop)
    out = preprocess(image, (32, 32), (0, 0, 0), (1, 1, 1))
    assert out.shape == (3, 32, 32)
    assert out[0, :, 0].min() > 0.9 and out[0, :, -1].max() == 0


def test_preprocess_rejects_bad_mean() -> None:
    with pytest.raises(ValueError, match="3 values"):
        preprocess(np.zeros((4, 4, 3), np.uint8), (4, 4), (0.5,), STD)


# ---------------------------------------------------------------------------- load_batches


def _mixed_inputs(folder: Path) -> list[InputImage]:
    """Seven inputs of different sizes; numbers 2 and 5 fail to decode."""
    items = []
    for number in range(7):
        path = folder / f"{number}.png"
        if number == 2:
            _touch(path, b"not a png")
        elif number != 5:  # 5 does not exist
            assert cv2.imwrite(str(path), np.full((10 + number, 20, 3), number * 30, np.uint8))
        items.append(InputImage(path, Path(path.name)))
    return items


@pytest.mark.parametrize("workers", [0, 2])
def test_load_batches_in_order_with_failures(tmp_path: Path, workers: int) -> None:
    cv2.resize(np.zeros((500, 500), np.uint8), (300, 300))  # OpenCV used before workers fork
    items = _mixed_inputs(tmp_path)
    batches = list(load_batches(iter(items), (8, 8), MEAN, STD, batch_size=3, workers=workers))
    assert [len(batch) for batch in batches] == [3, 3, 1]
    loaded = [image for batch in batches for image in batch]
    assert [image.index for image in loaded] == list(range(7))
    assert [image.input for image in loaded] == items
    for image in loaded:
        if image.index in (2, 5):
            assert image.tensor is None and image.original_size == (0, 0)
            assert image.error is not None and str(image.input.path) in image.error
        else:
            assert image.error is None and image.tensor is not None
            assert image.tensor.shape == (3, 8, 8) and image.original_size == (10 + image.index, 20)
            level = (image.index * 30 / 255 - MEAN[0]) / STD[0]
            assert abs(float(image.tensor[0].mean()) - level) < 1e-5
    assert "no such file" in (loaded[5].error or "")


def test_load_batches_workers_agree(tmp_path: Path) -> None:
    items = _mixed_inputs(tmp_path)
    serial = [i for b in load_batches(items, (8, 8), MEAN, STD, 4, workers=0) for i in b]
    parallel = [i for b in load_batches(items, (8, 8), MEAN, STD, 4, workers=2) for i in b]
    assert [(i.index, i.error, i.original_size) for i in serial] == [
        (i.index, i.error, i.original_size) for i in parallel
    ]
    for a, b in zip(serial, parallel, strict=True):
        if a.tensor is None or b.tensor is None:
            assert a.tensor is None and b.tensor is None
        else:
            assert torch.equal(a.tensor, b.tensor)


def test_load_batches_pulls_inputs_lazily(tmp_path: Path) -> None:
    pulled: list[int] = []

    def inputs() -> Iterator[InputImage]:
        for number in range(1000):
            pulled.append(number)
            yield InputImage(tmp_path / f"{number}.png", Path(f"{number}.png"))

    first = next(load_batches(inputs(), (8, 8), MEAN, STD, batch_size=2, workers=0))
    assert len(first) == 2 and len(pulled) <= 4
