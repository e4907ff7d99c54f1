"""A run folder is untrusted input (issue 21): a manifest, a report folder or an OUT that someone
else filled never makes ``scorecam`` write, read or link outside it, hang or crash. Commands run
in child processes (``hostile.cli``), so a hang fails on its timeout and a crash shows as a
signal in the exit code."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hostile import TINY, cli, errors, images, one_error_naming, records
from report_fixtures import write_synthetic_run

from scorecam_cli.cli.escaping import escape_field
from scorecam_cli.errors import OutputWrite
from scorecam_cli.manifest import MANIFEST_NAME, ManifestWriter, part_name, read_manifest
from scorecam_cli.temp_files import ORPHAN_AGE_S, is_orphan, temp_path, writer_tag


def synthetic(root: Path, inputs: int) -> Path:
    """``root/out``: ``inputs`` maps (one class, Score-CAM) of ``root/in/imgNNNNN.png``."""
    write_synthetic_run(root, inputs=inputs, classes=1, methods=("scorecam",))
    return root / "out"


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def rewrite(out: Path, entries: list[dict[str, Any]]) -> None:
    (out / MANIFEST_NAME).write_text("".join(json.dumps(e) + "\n" for e in entries))


def page(html: Path) -> dict[str, Any]:
    """The page's card data, parsed as strictly as a browser's JSON.parse (no NaN)."""
    text = html.read_text(encoding="utf-8")
    blob = text.split('type="application/json">')[1].split("</script>")[0]
    return json.loads(blob, parse_constant=lambda name: pytest.fail(f"{name} in the page"))


def links(html: Path) -> list[Path]:
    """Where every link of the page leads, resolved."""
    found = []
    for card in page(html)["cards"]:
        targets = [card["original"]] + [m[k] for m in card["maps"] for k in ("thumb", "href")]
        found += [(html.parent / unquote(t)).resolve() for t in targets if t is not None]
    return found


def tree(folder: Path) -> dict[Path, bytes | None]:
    """Every path below ``folder`` (links not followed), with the bytes of its files."""
    return {p: p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def warnings(stderr: bytes) -> list[str]:
    errors(stderr)  # no traceback
    return [line for line in stderr.decode("utf-8", "replace").splitlines() if "warning:" in line]


def png_header(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header announces ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


# ---------------------------------------------------------------- paths in the manifest


@pytest.mark.parametrize("key", ["overlay", "npy", "heatmap"])
def test_manifest_paths_leading_out_of_out_are_skipped_and_nothing_is_written_outside(
    tmp_path: Path, key: str
) -> None:
    out = synthetic(tmp_path, inputs=4)
    entries = lines(out)
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.copy(out / entries[0]["overlay"], victim / "system.png")  # a real image: only the
    (out / "sub").symlink_to(victim)  # path check keeps the report from reading or writing it
    entries[0][key] = str(victim / "system.png")  # absolute
    entries[1][key] = "../victim/system.png"  # .. out of OUT
    entries[2][key] = "sub/system.png"  # through a symlink planted in OUT
    rewrite(out, entries)
    outside = {p: b for p, b in tree(tmp_path).items() if not p.is_relative_to(out)}
    result = cli("report", out)
    assert result.returncode == 0, result.stderr
    said = warnings(result.stderr)
    for number, why in [(1, "absolute"), (2, "leads out"), (3, "through a symlink")]:
        (line,) = [w for w in said if f"{MANIFEST_NAME}:{number}:" in w]
        assert f"its {key} path" in line and why in line and "skipped" in line
    assert {p: b for p, b in tree(tmp_path).items() if not p.is_relative_to(out)} == outside
    html = out / "report.html"
    assert len(page(html)["cards"]) == 1  # the fourth map only
    assert all(link.is_relative_to(out.resolve()) for link in links(html))


def test_an_input_outside_out_is_read_only_and_only_as_a_regular_file(tmp_path: Path) -> None:
    out = synthetic(tmp_path, inputs=3)
    entries = lines(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    photo, pipe = elsewhere / "photo.png", elsewhere / "pipe.png"
    shutil.copy(tmp_path / "in" / "img00000.png", photo)
    os.mkfifo(pipe)
    entries[0] |= {"input": "photo.png", "input_abspath": str(photo)}
    entries[1] |= {"input": str(pipe), "input_abspath": str(pipe)}  # would block a reader
    entries[2] |= {"input": "/dev/zero", "input_abspath": "/dev/zero"}  # would never end
    rewrite(out, entries)
    result = cli("report", out, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "2 inputs not found" in result.stderr.decode()
    cards = page(out / "report.html")["cards"]
    assert cards[0]["original"] and (out / unquote(cards[0]["original"])).is_file()
    assert cards[1]["original"] is None and cards[2]["original"] is None
    assert sorted(elsewhere.iterdir()) == [photo, pipe]  # read, never written beside


@pytest.mark.parametrize(
    "target",
    [
        MANIFEST_NAME,
        part_name(0, 2),  # a part's name, even before a shard wrote it
        "img00000.png.c0.overlay.png",
        "img00000.png.c0.npy",
        "sub/later.png.c3.gradcam.npy",  # a name of ours inside OUT
        "../in/img00000.png",  # the input
    ],
)
def test_report_refuses_the_runs_own_files_as_its_page(tmp_path: Path, target: str) -> None:
    out = synthetic(tmp_path, inputs=1)
    before = tree(tmp_path)
    result = cli("report", out, "-o", out / target)
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert "one of the run's files" in line and "-o" in line
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- bad lines and files


def test_bad_manifest_lines_and_files_are_one_warning_each_in_report_and_resume(
    tmp_path: Path,
) -> None:
    images(tmp_path / "in", 2)
    out = tmp_path / "out"
    first = cli("run", tmp_path / "in", "-o", out, *TINY)
    assert first.returncode == 0, first.stderr
    good = (out / MANIFEST_NAME).read_text().splitlines()
    entry = json.loads(good[0])
    bad = [
        json.dumps({k: v for k, v in entry.items() if k != "input"}),
        json.dumps(entry | {"written_at": int("9" * 400)}),
        "[" * 100_000 + "]" * 100_000,
        json.dumps(entry | {"probability": float("nan")}),  # Python writes NaN
        json.dumps(entry | {"probability": "P"}).replace('"P"', "1e999"),
        json.dumps(entry | {"class_index": True, "npy": "other.c1.npy"}),
        json.dumps(entry | {"input": "x" * (2**20 + 10)}),  # a line over the 1 MB limit
    ]
    with (out / MANIFEST_NAME).open("a") as manifest:
        manifest.write("".join(line + "\n" for line in bad))
    parts = [part_name(i, 4) for i in range(4)]
    (out / parts[0]).mkdir()
    os.mkfifo(out / parts[1])
    (out / parts[2]).symlink_to("/dev/zero")
    with (out / parts[3]).open("wb") as sparse:  # 300 MB that take no disk
        sparse.truncate(300 * 2**20)
    report = cli("report", out, timeout=60)
    resume = cli("run", tmp_path / "in", "-o", out, *TINY, "--skip-existing", timeout=120)
    for result in (report, resume):
        assert result.returncode == 0, result.stderr
        said = warnings(result.stderr)
        assert len(said) == len(bad) + len(parts), said
        for number in range(len(good) + 1, len(good) + len(bad) + 1):
            assert len([w for w in said if f"{MANIFEST_NAME}:{number}: " in w]) == 1
        for part in parts:
            assert len([w for w in said if part in w and "not read" in w]) == 1
    assert records(resume.stdout) == [] and "2 skipped" in resume.stderr.decode()
    assert len(page(out / "report.html")["cards"]) == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"input": 3}, "no input"),
        ({"overlay": None}, "no overlay"),
        ({"class_index": 1.5}, "not an integer"),
        ({"probability": "high"}, "not a number"),
        ({"original_size": [1, -2]}, "original_size"),
        ({"options": []}, "options"),
        ({"class_name": "a\0b"}, "class_name"),
        ({"npy": ""}, "empty"),
        ({"npy": "a\0b.npy"}, "NUL"),
    ],
)
def test_lines_of_the_wrong_shape_are_skipped_with_the_reason(
    tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    good = {"input": "x.png", "npy": "x.png.c1.npy", "overlay": "x.png.c1.overlay.png"}
    with ManifestWriter(tmp_path / MANIFEST_NAME) as writer:
        writer.append(good)
        writer.append(good | {"npy": "y.png.c1.npy"} | change)
    manifest = read_manifest(tmp_path)
    assert [e["npy"] for e in manifest.entries] == ["x.png.c1.npy"]
    (problem,) = manifest.problems
    assert f"{MANIFEST_NAME}:2:" in problem and why in problem and "skipped" in problem


def test_paths_in_the_manifest_come_back_normalised(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path / MANIFEST_NAME) as writer:
        writer.append({"input": "x.png", "npy": "a/./b/../x.c1.npy", "overlay": "a//x.png"})
    (entry,) = read_manifest(tmp_path).entries
    assert (entry["npy"], entry["overlay"]) == ("a/x.c1.npy", "a/x.png")


# ---------------------------------------------------------------- images the report reads


def test_report_reads_previews_under_the_limits_run_applies(tmp_path: Path) -> None:
    out = synthetic(tmp_path, inputs=2)
    bomb = out / lines(out)[0]["overlay"]
    bomb.write_bytes(png_header(10_000, 10_000))  # 100 megapixels by its header
    with (tmp_path / "in" / "img00001.png").open("r+b") as huge:
        huge.truncate(300 * 2**20)  # sparse: 300 MB that take no disk
    tight = cli("report", out, "--max-pixels", "100")  # the 16 x 16 images are 256 pixels
    assert tight.returncode == 0
    assert len([w for w in warnings(tight.stderr) if "--max-pixels" in w]) == 3
    result = cli("report", out)
    assert result.returncode == 0, result.stderr
    said = warnings(result.stderr)
    (line,) = [w for w in said if bomb.name in w]
    assert "10000x10000" in line and "--max-pixels" in line
    (line,) = [w for w in said if "img00001.png" in w]
    assert "over the limit of 256 MB" in line
    cards = page(out / "report.html")["cards"]
    assert cards[0]["maps"][0]["thumb"] is None and cards[0]["original"]
    assert cards[1]["original"] is None and cards[1]["maps"][0]["thumb"]


def test_names_that_are_not_utf8_neither_crash_the_report_nor_reach_stdout_raw(
    tmp_path: Path,
) -> None:
    root = tmp_path / os.fsdecode(b"run\xe9\nx")  # not UTF-8, and a newline
    out = synthetic(root, inputs=1)
    entries = lines(out)
    photo = root / "in" / os.fsdecode(b"caf\xe9.png")
    shutil.copy(root / "in" / "img00000.png", photo)
    entries[0]["input_abspath"] = str(photo)
    rewrite(out, entries)
    result = cli("report", out)
    assert result.returncode == 0, (result.returncode, result.stderr)  # was -11: a segfault
    assert result.stdout == escape_field(str(out / "report.html")).encode() + b"\n"
    assert b"run\\xe9\\nx" in result.stdout
    card = page(out / "report.html")["cards"][0]
    assert card["original"] and card["maps"][0]["thumb"]  # both decoded


# ---------------------------------------------------------------- symlinks planted in OUT


def test_run_never_writes_through_a_symlinked_folder_planted_in_out(tmp_path: Path) -> None:
    images(tmp_path / "in" / "sub", 2)
    images(tmp_path / "in", 1)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    result = cli("run", tmp_path / "in", "-o", out, *TINY)
    assert result.returncode == 1
    for name in ("sub/im00.png", "sub/im01.png"):
        one_error_naming(result.stderr, name, "symlinked folder", str(out / "sub"))
    assert list(elsewhere.iterdir()) == []
    assert len(records(result.stdout)) == 1  # in/im00.png, beside the link


def test_report_never_writes_through_a_symlinked_folder(tmp_path: Path) -> None:
    out = synthetic(tmp_path, inputs=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "report-files").symlink_to(elsewhere)
    result = cli("report", out)
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    assert "report-files" in line and "symlinked folder" in line
    assert not (out / "report.html").exists()
    (out / "report-files").unlink()
    (out / "report-files" / "w192").mkdir(parents=True)
    (out / "report-files" / "w192" / "maps").symlink_to(elsewhere)  # deeper in the tree
    deeper = cli("report", out)
    assert deeper.returncode == 0
    (line,) = warnings(deeper.stderr)  # one line for the folder, not one per thumbnail
    assert "w192/maps" in line and "symlinked folder" in line
    assert list(elsewhere.iterdir()) == []
    (card,) = page(out / "report.html")["cards"]
    assert card["maps"][0]["thumb"] is None and card["original"]


def test_a_symlinked_manifest_is_neither_written_nor_read(tmp_path: Path) -> None:
    images(tmp_path / "in", 1)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.jsonl"
    out.mkdir()
    elsewhere.write_text("")
    (out / MANIFEST_NAME).symlink_to(elsewhere)
    result = cli("run", tmp_path / "in", "-o", out, *TINY)
    assert result.returncode == 1 and records(result.stdout) == []
    (line,) = result.stderr.decode().splitlines()[-1:]
    assert MANIFEST_NAME in line and "symlink" in line
    assert elsewhere.read_text() == "" and not list(out.glob("*.png"))  # refused before any pass
    with pytest.raises(OutputWrite, match="symlink"):  # the library's writer refuses it too
        ManifestWriter(out / MANIFEST_NAME).append({"npy": "x.npy"})
    run = synthetic(tmp_path / "other", inputs=1)
    (run / MANIFEST_NAME).rename(elsewhere)
    (run / MANIFEST_NAME).symlink_to(elsewhere)
    report = cli("report", run)
    (line,) = warnings(report.stderr)
    assert "a symlink" in line and "not read" in line
    assert page(run / "report.html")["cards"] == []


def test_a_fifo_named_as_the_manifest_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / MANIFEST_NAME)
    with pytest.raises(OutputWrite, match="not a regular file"):
        ManifestWriter(tmp_path / MANIFEST_NAME).append({"npy": "x.npy"})


# ---------------------------------------------------------------- temp files of other writers


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_temp_files_of_writers_on_other_hosts_are_kept_until_old(tmp_path: Path) -> None:
    dead, ours = dead_pid(), writer_tag()
    other = "%08x" % (int(ours, 16) ^ 1)  # another node or container
    names = {
        "ours, writer gone": f".x.png.{ours}-{dead}.0123abcd.tmp",
        "ours, writer alive": f".x.png.{ours}-{os.getpid()}.0123abcd.tmp",
        "another host's": f".x.png.{other}-{dead}.0123abcd.tmp",
        "no host (older versions)": f".x.png.{dead}.0123abcd.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"half")
    now = {kind: is_orphan(tmp_path / name) for kind, name in names.items()}
    assert now == {
        "ours, writer gone": True,
        "ours, writer alive": False,
        "another host's": False,
        "no host (older versions)": False,
    }
    later = time.time() + ORPHAN_AGE_S + 60
    assert all(is_orphan(tmp_path / name, now=later) for name in names.values())
    fresh = temp_path(tmp_path / "x.png")
    assert fresh.parent == tmp_path and fresh.name.startswith(f".x.png.{ours}-{os.getpid()}.")
    assert not is_orphan(fresh)


def test_a_run_keeps_other_hosts_temp_files_and_removes_its_own_orphans(tmp_path: Path) -> None:
    images(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    dead, ours = dead_pid(), writer_tag()
    other = "%08x" % (int(ours, 16) ^ 1)
    theirs = out / f".im00.png.c1.overlay.png.{other}-{dead}.0123abcd.tmp"
    mine = out / f".im00.png.c1.overlay.png.{ours}-{dead}.0123abcd.tmp"
    for path in (theirs, mine):
        path.write_bytes(b"half")
    result = cli("run", tmp_path / "in", "-o", out, *TINY)
    assert result.returncode == 0, result.stderr
    assert theirs.exists() and not mine.exists()
