"""Hostile inputs of issue 21, sections 2 and 4: a full /dev/shm under the decoding workers, image
sizes only from headers, seeded random models, the bounded export cache, ``--shard`` digits and
``eval --steps``. Section numbers are in the test names."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hostile import EXE, TINY, child_env, cli, errors, images, one_error_naming, records
from PIL import Image
from torch import nn

from scorecam_cli import images as images_module
from scorecam_cli.backends import cache as export_cache
from scorecam_cli.backends import export as exporter
from scorecam_cli.backends.cache import onnx_path
from scorecam_cli.errors import ImageRead
from scorecam_cli.faithfulness import deletion_curve, insertion_curve
from scorecam_cli.file_limits import header_pixels
from scorecam_cli.image_headers import FORMATS, MAX_SEGMENTS, image_size, jpeg_segments
from scorecam_cli.images import read_image
from scorecam_cli.models import load_model
from scorecam_cli.shards import Shard, parse_shard

SHM_WARNING = "shared memory is full"
NO_SIZE = f"not a {FORMATS} image (no image size in its header)"

# ------------------------------------------------------------ 2: a full /dev/shm under the workers

# Runs the CLI with torch's shared-memory allocation failing as it does when /dev/shm is full
# (the error is torch's own message); forked decoding workers inherit the failure.
FULL_SHM = """
import sys, torch
def full(self, *args, **kwargs):
    raise RuntimeError(
        "unable to allocate shared memory(shm) for file </torch_1_2_3>: "
        "No space left on device (28)"
    )
torch.UntypedStorage._share_fd_cpu_ = full
torch.UntypedStorage._share_filename_cpu_ = full
from scorecam_cli.cli import entry_point
sys.argv = ["scorecam", *sys.argv[1:]]
entry_point()
"""


@pytest.mark.parametrize("command", ["run", "eval"])
def test_2_full_shared_memory_copies_images_with_one_warning(tmp_path, command):
    images(tmp_path / "in", 5)
    out = ["-o", str(tmp_path / "out")] if command == "run" else ["--format", "jsonl"]
    args = [command, str(tmp_path / "in"), *out, *TINY, "--workers", "2", "--image-batch", "2"]
    done = subprocess.run(
        [sys.executable, "-c", FULL_SHM, *args],
        capture_output=True,
        env=child_env(),
        timeout=120,  # it hung for ever
    )
    assert done.returncode == 0 and errors(done.stderr) == [], done.stderr
    warnings = [line for line in done.stderr.decode().splitlines() if SHM_WARNING in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], done.stderr
    if command == "run":
        assert len(records(done.stdout)) == 5
    else:
        assert [json.loads(row)["images"] for row in records(done.stdout)] == [5, 5]


def _small_dev_shm(megabytes: int) -> list[str] | None:
    """A command prefix running its command with a tmpfs of ``megabytes`` over /dev/shm, in a
    mount namespace of its own (root, or an unprivileged user namespace); None where neither
    is allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    mount = f'mount -t tmpfs -o size={megabytes}m tmpfs /dev/shm && exec "$@"'
    for flags in (["--mount"], ["--user", "--map-root-user", "--mount"]):
        prefix = [unshare, *flags, "sh", "-c", mount, "sh"]
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


def test_2_a_small_dev_shm_tmpfs_decodes_every_photo(tmp_path):
    prefix = _small_dev_shm(2)
    if prefix is None:
        pytest.skip("no mount namespace here to put a small tmpfs over /dev/shm")
    folder = tmp_path / "photos"
    folder.mkdir()
    y, x = np.mgrid[0:1000, 0:1200]
    for n in range(3):  # each 3.6 MB decoded: none fits in 2 MB of shared memory
        photo = np.stack([x * (n + 1) // 8, y // 4, (x + y) // 10], axis=2) % 256
        assert cv2.imwrite(str(folder / f"p{n}.jpg"), photo.astype(np.uint8))
    command = ["run", str(folder), "-o", str(tmp_path / "out"), *TINY, "--npy-size", "input"]
    done = subprocess.run(
        [*prefix, EXE, *command],
        capture_output=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 0 and errors(done.stderr) == [], done.stderr
    assert len(records(done.stdout)) == 3
    assert done.stderr.decode().count(SHM_WARNING) == 1


# ------------------------------------------------------------ 4: sizes only from headers


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A gray 8-bit PNG of zeros, compressed a block of rows at a time (no image in memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum

    packer = zlib.compressobj(9)
    rows = bytes(width + 1) * 256  # filter byte 0, then the row
    parts = [packer.compress(rows) for _ in range(height // 256)]
    parts += [packer.compress(bytes(width + 1) * (height % 256)), packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )
    return path


def never_decode(*args: object) -> None:
    raise AssertionError("decoded an image that should have been refused from its header")


def test_4_a_png_bomb_past_pillows_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    bomb = png_bomb(tmp_path / "bomb.png", 16000, 12000)  # 192 Mpx in 190 KB
    assert bomb.stat().st_size < 300_000
    with pytest.raises(Image.DecompressionBombError):  # Pillow cannot tell its size
        Image.open(bomb)
    assert header_pixels(bomb) == 192_000_000  # the batch accounting knows it too
    with monkeypatch.context() as patch:
        patch.setattr(images_module.cv2, "imdecode", never_decode)
        with pytest.raises(ImageRead, match=r"16000x12000 is 192,000,000 pixels, over the limit"):
            read_image(bomb)
    (good,) = images(tmp_path / "in", 1)
    run = cli("run", good, bomb, "-o", tmp_path / "out", *TINY, "--workers", "0")
    assert run.returncode == 1 and len(records(run.stdout)) == 1
    one_error_naming(run.stderr, "bomb.png", "16000x12000 is 192,000,000 pixels", "--max-pixels")


def _encodings() -> list[tuple[str, bytes]]:
    """Files of a 48 x 64 image in every format we read, as OpenCV and Pillow write them."""
    colour = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cases = []
    for suffix in (".jpg", ".png", ".bmp", ".tif", ".webp", ".gif", ".pbm", ".pgm", ".ppm"):
        source = colour[..., 0] if suffix in (".pbm", ".pgm") else colour
        cases.append((suffix, cv2.imencode(suffix, source)[1].tobytes()))
    for suffix in (".sr", ".jp2", ".pam", ".avif"):
        cases.append((suffix, cv2.imencode(suffix, colour)[1].tobytes()))
    for suffix in (".pfm", ".hdr"):
        cases.append((suffix, cv2.imencode(suffix, colour.astype(np.float32) / 255)[1].tobytes()))
    for name, suffix, source, options in [
        ("lossless .webp", ".webp", colour, [cv2.IMWRITE_WEBP_QUALITY, 101]),
        ("16-bit .png", ".png", colour.astype(np.uint16) * 257, []),
        ("16-bit .tif", ".tif", colour.astype(np.uint16) * 257, []),
        ("float .tif", ".tif", colour.astype(np.float32) / 255, []),
    ]:
        cases.append((name, cv2.imencode(suffix, source, options)[1].tobytes()))
    for name, options in [
        ("JPEG", {"progressive": True}),
        ("TIFF", {"big_tiff": True}),
        ("TIFF", {"compression": "tiff_deflate"}),
        ("JPEG2000", {"no_jp2": True}),  # a bare codestream
        ("BMP", {}),
    ]:
        buffer = io.BytesIO()
        Image.fromarray(colour).save(buffer, name, **options)
        cases.append((f"Pillow {name} {options}", buffer.getvalue()))
    return cases


@pytest.mark.parametrize(("name", "data"), _encodings(), ids=[n for n, _ in _encodings()])
def test_4_every_format_gives_its_size_from_the_header(name, data):
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape[:2] == (48, 64)  # what OpenCV will decode
    assert image_size(data) == (48, 64)
    for end in range(64):  # a header cut short is unknown, never a crash or a wrong size
        assert image_size(data[:end]) in (None, (48, 64))


@pytest.mark.parametrize(
    "data",
    [
        b"v/1\x01" + bytes(400),  # OpenEXR: OpenCV's reader, no size reader of ours
        b"this is not a picture\n",
        b"\x89PNG\r\n\x1a\n" + bytes(100) + b"IEND",  # no IHDR
        b"\xff\xd8\xff\xda" + bytes(100) + b"\xff\xd9",  # a scan before any frame header
    ],
)
def test_4_no_size_in_the_header_is_refused_never_decoded(tmp_path, monkeypatch, data):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    monkeypatch.setattr(images_module.cv2, "imdecode", never_decode)
    with pytest.raises(ImageRead) as info:
        read_image(path)
    assert str(info.value) == f"{path}: {NO_SIZE}"


def test_4_header_walks_are_bounded():
    """A file of nothing but tiny JPEG segments or boxes is no long loop (and no size)."""
    segments = b"\xff\xd8" + b"\xff\xe0\x00\x02" * (2 * MAX_SEGMENTS) + b"\xff\xd9"
    assert sum(1 for _ in jpeg_segments(segments)) == MAX_SEGMENTS
    assert image_size(segments) is None
    signature = b"\0\0\0\x0cjP  \r\n\x87\n"
    header = b"\0\0\0\x16jp2h" + b"\0\0\0\x0eihdr" + struct.pack(">II", 2, 3)  # 2 x 3 px
    free = b"\0\0\0\x08free"  # empty boxes
    assert image_size(signature + free * 10 + header) == (2, 3)
    assert image_size(signature + free * (2 * MAX_SEGMENTS) + header) is None


# ------------------------------------------------------------ 4: random init, seeded

PRINT_EXPORT_KEY = """
from scorecam_cli.backends.cache import onnx_path
from scorecam_cli.models import load_model
print(onnx_path(load_model("squeezenet1_1", "none").module, "squeezenet1_1", (64, 64)).name)
"""


def test_4_weights_none_gives_the_same_model_in_every_process(tmp_path):
    (photo,) = images(tmp_path / "in", 1)
    model = ["--model", "squeezenet1_1", "--weights", "none", "--input-size", "64"]
    maps = []
    for run in ("a", "b"):
        done = cli("run", photo, "-o", tmp_path / run, *model, "--method", "gradcam")
        assert done.returncode == 0, done.stderr
        (npy,) = (tmp_path / run).glob("*.npy")
        maps.append(np.load(npy))
    assert maps[0].std() > 0 and np.array_equal(maps[0], maps[1])
    child = subprocess.run(
        [sys.executable, "-c", PRINT_EXPORT_KEY], capture_output=True, env=child_env()
    )
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    here = load_model("squeezenet1_1", "none").module  # built in this process too
    assert torch.equal(torch.rand(3), expected)  # and the caller's generator left as it was
    assert child.stdout.decode().strip() == onnx_path(here, "squeezenet1_1", (64, 64)).name


# ------------------------------------------------------------ 4: the export cache, bounded


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    """A cache folder of this test's own ($XDG_CACHE_HOME/scorecam), limit by the default."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(export_cache.MAX_GB_VARIABLE, raising=False)
    return export_cache.cache_dir()


def fake_export(size: int):
    """An exporter that writes ``size`` bytes, counting its calls."""
    calls: list[Path] = []

    def export(model: nn.Module, input_size: tuple[int, int], path: Path, *_: object) -> None:
        calls.append(path)
        path.write_bytes(b"x" * size)

    return export, calls


def _set_limit(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setenv(export_cache.MAX_GB_VARIABLE, repr(size / 2**30))


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_4_the_cache_keeps_its_limit_least_recently_used_out_first(cache_root, monkeypatch):
    export, calls = fake_export(1000)
    monkeypatch.setattr(exporter, "export_onnx", export)
    onnx = cache_root / "onnx"
    first, second, third = (onnx / f"m{n}.onnx" for n in range(3))
    _set_limit(monkeypatch, 2500)  # two exports and a half
    model = nn.Linear(2, 2)
    for path in (first, second):
        export_cache.cached_onnx(model, path, (8, 8))
    blobs = export_cache.openvino_blob_dir(first)
    blobs.mkdir(parents=True)
    (blobs / "1234.blob").write_bytes(b"b" * 100)  # OpenVINO's, part of the first entry
    _age(first, 200)
    _age(second, 100)
    assert [e.name for e in export_cache.cache_entries()] == ["onnx/m0.onnx", "onnx/m1.onnx"]
    assert export_cache.cache_entries()[0].size == 1100
    export_cache.cached_onnx(model, first, (8, 8))  # a hit: used now, not exported again
    assert len(calls) == 2
    export_cache.cached_onnx(model, third, (8, 8))  # 3100 bytes: the least recently used goes
    assert [e.name for e in export_cache.cache_entries()] == ["onnx/m0.onnx", "onnx/m2.onnx"]
    assert not second.exists() and blobs.is_dir()
    monkeypatch.setenv(export_cache.MAX_GB_VARIABLE, "0")
    export_cache.cached_onnx(model, second, (8, 8))  # the entry in use stays, alone
    assert [e.name for e in export_cache.cache_entries()] == ["onnx/m1.onnx"]
    assert not blobs.exists()


@pytest.mark.parametrize("text", ["abc", "-1", "nan", "inf", "1e999"])
def test_4_a_bad_cache_limit_is_one_warning_and_the_default(monkeypatch, caplog, text):
    monkeypatch.setenv(export_cache.MAX_GB_VARIABLE, text)
    assert export_cache.cache_limit() == int(export_cache.DEFAULT_MAX_GB * 2**30)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert export_cache.MAX_GB_VARIABLE in caplog.records[0].getMessage()


# The export of a process killed while it exports: its temporary file stays behind.
KILLED_EXPORT = """
import os, sys
from pathlib import Path
from torch import nn
from scorecam_cli.backends import cache, export

def killed(model, input_size, path, *args):
    path.write_bytes(b"half an export")
    os._exit(9)

export.export_onnx = killed
cache.cached_onnx(nn.Linear(2, 2), Path(sys.argv[1]), (8, 8))
"""


def test_4_stale_temporary_files_of_killed_exports_are_removed(cache_root, monkeypatch):
    onnx = cache_root / "onnx"
    target = onnx / "killed.onnx"
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(target)], env=child_env())
    assert done.returncode == 9
    (killed,) = onnx.glob(".killed.onnx.*.tmp")
    host = export_cache._host()
    live = onnx / f".live.onnx.{host}.{os.getpid()}.abcd_123.tmp"  # this process: exporting
    foreign = onnx / ".other.onnx.elsewhere.1.abcd_123.tmp"  # another host's: alive
    old_foreign = onnx / ".old.onnx.elsewhere.1.abcd_123.tmp"
    unnamed = onnx / ".older.onnx.abcd_123.tmp"  # no host, no PID (an older layout)
    for path in (live, foreign, old_foreign, unnamed):
        path.write_bytes(b"partial")
    _age(old_foreign, 2 * 86400)
    _age(unnamed, 2 * 86400)
    removed = export_cache.remove_stale_temporaries()
    assert sorted(removed) == sorted([killed, old_foreign, unnamed])
    assert sorted(p.name for p in onnx.iterdir()) == sorted([live.name, foreign.name])
    assert export_cache.cache_entries() == []  # temporary files are no entries


def test_4_scorecam_cache_lists_and_clears(cache_root):
    onnx = cache_root / "onnx"
    onnx.mkdir(parents=True)
    for n, age in enumerate((100, 300, 200)):
        with open(onnx / f"m{n}.onnx", "wb") as file:
            file.truncate(3 * 2**20)  # sparse
        _age(onnx / f"m{n}.onnx", age)
    listed = cli("cache")
    assert listed.returncode == 0 and errors(listed.stderr) == []
    rows = [line.split("\t") for line in records(listed.stdout)]
    assert [row[2] for row in rows] == ["onnx/m1.onnx", "onnx/m2.onnx", "onnx/m0.onnx"]
    assert {row[0] for row in rows} == {"3.00"}
    assert all(time.strptime(row[1], "%Y-%m-%d %H:%M") for row in rows)
    assert b"3 entries, 9.00 MB of 2 GB" in listed.stderr
    cleared = cli("cache", "--clear")
    assert cleared.returncode == 0 and cleared.stdout == b""
    assert b"removed 3 entries" in cleared.stderr
    assert list(onnx.iterdir()) == []
    assert records(cli("cache").stdout) == []


def test_4_a_run_keeps_the_cache_within_its_limit(cache_root, tmp_path, monkeypatch):
    old = cache_root / "onnx" / "old-64x64-0123.onnx"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an export of another day")
    _age(old, 86400)
    monkeypatch.setenv(export_cache.MAX_GB_VARIABLE, "0")
    (photo,) = images(tmp_path / "in", 1)
    run = cli("run", photo, "-o", tmp_path / "out", *TINY, "--backend", "onnxruntime")
    assert run.returncode == 0 and len(records(run.stdout)) == 1, run.stderr
    assert b"removed 1 least recently used entries" in run.stderr
    assert [p.name for p in (cache_root / "onnx").iterdir()] == [
        next(p.name for p in (cache_root / "onnx").glob("tinymodels_tiny-64x64-*.onnx"))
    ]


# ------------------------------------------------------------ 4: --shard digits, eval --steps


@pytest.mark.parametrize("text", ["1_0/20", "\u0661/\u0664", "0/2\u00b2", " 1/4", "+1/4", "1/4\n"])
def test_4_shard_takes_ascii_digits_only(text):
    with pytest.raises(ValueError, match="not I/N in digits 0-9"):
        parse_shard(text)
    assert parse_shard("007/8") == Shard(7, 8)


def test_4_a_shard_with_other_digits_is_a_usage_error(tmp_path):
    (photo,) = images(tmp_path, 1)
    done = cli("run", photo, "--shard", "1_0/20", "-o", tmp_path / "out", *TINY)
    assert done.returncode == 2 and b"not I/N in digits 0-9" in done.stderr
    assert b"Traceback" not in done.stderr and not (tmp_path / "out").exists()


class CountingNet(nn.Module):
    """A linear classifier of 8 x 8 images that counts the images it scores."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 5)
        self.scored = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scored += x.shape[0]
        return self.fc(x.flatten(1))  # (B, 5)


@pytest.mark.parametrize("curve", [deletion_curve, insertion_curve])
def test_4_eval_steps_are_capped_at_the_pixel_count(curve):
    generator = torch.Generator().manual_seed(0)
    images_ = torch.randn((2, 3, 8, 8), generator=generator)
    saliency = torch.rand((2, 8, 8), generator=generator)
    model = CountingNet().eval()
    many = curve(model, images_, saliency, [0, 1], steps=100_000, batch_size=4096)
    assert model.scored == 2 * 65  # 64 pixels: 65 images per curve, not 100,001
    exact = curve(model, images_, saliency, [0, 1], steps=64, batch_size=4096)
    assert torch.equal(many.probabilities, exact.probabilities)
    assert torch.equal(many.auc(), exact.auc())
