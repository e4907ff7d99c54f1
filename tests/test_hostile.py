"""Hostile and careless use, items 1-4, 7-9 and 11-14 of issue 10 (the process-level items, 5-6,
signals and the kill test are in test_hostile_process.py). Item numbers are in the test names."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hostile import TINY, cli, errors, images, no_temp_files, one_error_naming, records
from torch import nn

from scorecam_cli import outputs
from scorecam_cli.errors import WeightsError
from scorecam_cli.images import InputImage, find_inputs, load_batches
from scorecam_cli.manifest import read_manifest
from scorecam_cli.models import load_state_dict_file
from scorecam_cli.stages import accepted_inputs
from scorecam_cli.writing import RunOptions

# ------------------------------------------------------------ 1-3: outputs found by what we write


def test_1_out_equal_to_the_input_folder_explains_every_input(tmp_path):
    folder = tmp_path / "imgs"
    images(folder, 3)
    first = cli("run", folder, "-o", folder, *TINY)
    assert first.returncode == 0, first.stderr
    assert len(records(first.stdout)) == 3
    again = cli("run", folder, "-o", folder, *TINY, "--skip-existing")
    assert again.returncode == 0 and records(again.stdout) == []
    assert b"3 skipped" in again.stderr
    dot = cli("run", ".", "-o", ".", *TINY, "--overwrite", cwd=folder)
    assert dot.returncode == 0 and len(records(dot.stdout)) == 3
    assert not [p for p in folder.iterdir() if p.name.count(".c") > 1]  # no maps of our maps


def test_1_out_holding_the_input_folder(tmp_path):
    images(tmp_path / "in", 2)
    result = cli("run", tmp_path, "-o", tmp_path, *TINY)
    assert result.returncode == 0 and len(records(result.stdout)) == 2


def test_2_skip_existing_decides_per_map(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    images(folder, 2)
    assert cli("run", folder, "-o", out, *TINY, "--class", "5").returncode == 0
    (out / "im01.png.c5.overlay.png").unlink()  # killed between the npy and the overlay
    redo = cli("run", folder, "-o", out, *TINY, "--class", "5", "--skip-existing")
    assert redo.returncode == 0 and records(redo.stdout) == [str(out / "im01.png.c5.overlay.png")]
    other = cli("run", folder, "-o", out, *TINY, "--class", "7", "--skip-existing")
    assert other.returncode == 0 and len(records(other.stdout)) == 2
    assert (out / "im00.png.c7.npy").is_file()
    heat = cli("run", folder, "-o", out, *TINY, "--class", "7", "--heatmap", "--skip-existing")
    assert len(records(heat.stdout)) == 2  # the heatmaps were missing


def test_2_top_k_is_done_by_its_manifest_lines_and_files(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    images(folder, 2)
    assert cli("run", folder, "-o", out, *TINY, "-k", "2").returncode == 0
    assert records(cli("run", folder, "-o", out, *TINY, "-k", "2", "--skip-existing").stdout) == []
    next(out.glob("im00.png.c*.overlay.png")).unlink()
    redo = cli("run", folder, "-o", out, *TINY, "-k", "2", "--skip-existing")
    assert [Path(r).name.split(".c")[0] for r in records(redo.stdout)] == ["im00.png"] * 2


def test_2_another_inputs_outputs_do_not_count(tmp_path):
    out = tmp_path / "out"
    (x,) = images(tmp_path / "in", 1)
    out.mkdir()
    (out / f"{x.name}.crop.jpg.c24.npy").write_bytes(b"not ours")
    result = cli("run", x, "-o", out, *TINY, "--skip-existing")
    assert result.returncode == 0 and len(records(result.stdout)) == 1


def test_3_an_overlay_without_its_npy_is_not_replaced(tmp_path):
    (x,) = images(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    overlay = out / f"{x.name}.c5.overlay.png"
    overlay.write_bytes(b"keep me")
    result = cli("run", x, "-o", out, *TINY, "--class", "5")
    assert result.returncode == 1 and overlay.read_bytes() == b"keep me"
    one_error_naming(result.stderr, x.name, "outputs exist", "--overwrite")
    resumed = cli("run", x, "-o", out, *TINY, "--class", "5", "--skip-existing")
    assert resumed.returncode == 0 and b"--overwrite" not in resumed.stderr  # item 13
    assert overlay.read_bytes() != b"keep me"


# ---------------------------------------------------------------- 4: every written map reported


def test_4_fail_fast_reports_every_map_written(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    paths = images(folder, 10)
    paths[3].write_bytes(paths[3].read_bytes()[:40])
    result = cli("run", folder, "-o", out, *TINY, "--fail-fast", "--image-batch", "2")
    assert result.returncode == 1
    written = sorted(str(p) for p in out.glob("*.overlay.png"))
    assert sorted(records(result.stdout)) == written
    assert len(read_manifest(out).entries) == len(written)
    assert f"{len(written)} maps written".encode() in result.stderr
    one_error_naming(result.stderr, "im03.png", "truncated")


def test_4_summary_counts_passes_when_every_write_failed(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    images(folder / "sub", 2)
    out.mkdir()
    (out / "sub").write_bytes(b"a file where the output folder should be")
    result = cli("run", folder, "-o", out, *TINY)
    assert result.returncode == 1 and len(errors(result.stderr)) == 2
    assert re.search(rb"masked forward passes: [1-9]\d* run", result.stderr), result.stderr


# ---------------------------------------------------------------- 6 (in part), 7: memory, scans


def test_6_batches_are_cut_by_pixels(tmp_path):
    paths = images(tmp_path, 6, 40, 50)
    items = [InputImage(p, Path(p.name)) for p in paths]
    limits = outputs_limits(batch_pixels=2 * 40 * 50)
    sizes = [len(b) for b in load_batches(items, (16, 16), (0, 0, 0), (1, 1, 1), 8, 0, limits)]
    assert sizes == [2, 2, 2]


def outputs_limits(**changes: int):
    from scorecam_cli.images import Limits

    return Limits(**changes)


def test_7_one_scan_per_output_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for n in range(300):
        (out / f"im{n}.png.c1.npy").write_bytes(b"")
    calls: list[str] = []
    real = os.scandir

    def counting(path):  # type: ignore[no-untyped-def]
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(outputs.os, "scandir", counting)
    options = RunOptions(output_dir=out, overwrite=True)
    explainer = SimpleNamespace(config=SimpleNamespace(method="scorecam"), classes=[1], top_k=1)
    inputs = [InputImage(tmp_path / f"im{n}.png", Path(f"im{n}.png")) for n in range(300)]
    accepted = list(accepted_inputs(inputs, options, explainer))  # type: ignore[arg-type]
    assert len(accepted) == 300 and calls == [str(out)] * len(calls) and len(calls) <= 2


# ---------------------------------------------------------------- 8: one line, the run goes on


def test_8_unreadable_subfolder_is_one_line(tmp_path, monkeypatch):
    images(tmp_path / "a", 1)
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def refusing(path):  # type: ignore[no-untyped-def]
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", refusing)
    found = list(find_inputs([str(tmp_path)]))
    assert [i.problem is None for i in found] == [True, False]
    assert "locked: cannot list folder (Permission denied)" in str(found[1].problem)


def test_8_symlink_loops_and_nul_bytes(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    images(folder, 1)
    (folder / "loop.png").symlink_to(folder / "loop.png")
    named = cli("run", folder, folder / "loop.png", "-o", out, *TINY)
    assert named.returncode == 1 and len(records(named.stdout)) == 1
    assert len(errors(named.stderr)) == 2  # once from the folder walk, once named
    stdin = b"%s\n%s/a\x00b.png\n" % (bytes(folder / "im00.png"), bytes(folder))
    piped = cli("run", "-", "-o", tmp_path / "out2", *TINY, stdin=stdin)
    assert piped.returncode == 1 and len(records(piped.stdout)) == 1
    one_error_naming(piped.stderr, "a\\0b.png", "NUL")


# ---------------------------------------------------------------- 9, 14: usage errors, one line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--class", "12"], ["--class 12", "10 classes"]),
        (["-k", "2000"], ["--top-k 2000", "10 classes"]),  # 13: not silently capped
        (["--device", "nonsense"], ["nonsense", "cpu"]),
        (["--device", "meta"], ["meta"]),
        (["--device", "mps"], ["mps"]),
        (["--device", "cuda:7"], ["cuda:7"]),
        (["--alpha", "nan"], ["--alpha"]),
        (["--precision", "fp16"], ["fp16", "CPU", "slower"]),  # 14
    ],
)
def test_9_14_bad_options_are_one_line_usage_errors(tmp_path, args, words):
    (x,) = images(tmp_path, 1)
    if args[:2] == ["--device", "mps"] and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")  # pragma: no cover - never on Linux CI
    result = cli("run", x, "-o", tmp_path / "out", *TINY, "--device", "cpu", *args)
    assert result.returncode == 2 and result.stdout == b""
    lines = result.stderr.decode().strip().splitlines()
    assert len([line for line in lines if line.startswith("Error:")]) == 1, lines
    assert "Traceback" not in result.stderr.decode()
    for word in words:
        assert word in lines[-1]


# ---------------------------------------------------------------- 11: NaN never leaves


def white(path: Path) -> Path:
    assert cv2.imwrite(str(path), np.full((24, 32, 3), 255, np.uint8))
    return path


NAN_MODEL = ["--model", "tinymodels:nan_on_bright", "--input-size", "64"]


def test_11_nan_logits_fail_that_input_only(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    images(folder, 2)
    white(folder / "white.png")
    result = cli("run", folder, "-o", out, *NAN_MODEL, "--format", "jsonl")
    assert result.returncode == 1
    one_error_naming(result.stderr, "white.png", "NaN")
    rows = [json.loads(line) for line in records(result.stdout)]  # strict JSON: no NaN
    assert [Path(r["input"]).name for r in rows] == ["im00.png", "im01.png"]
    assert not list(out.glob("white.png*"))
    manifest = (out / "manifest.jsonl").read_text()
    assert "NaN" not in manifest and len(read_manifest(out).entries) == 2


def test_11_eval_leaves_nan_inputs_out_of_every_metric(tmp_path):
    folder = tmp_path / "in"
    images(folder, 2)
    white(folder / "white.png")
    result = cli("eval", folder, *NAN_MODEL, "--format", "jsonl", "--steps", "2")
    assert result.returncode == 1
    one_error_naming(result.stderr, "white.png", "NaN")
    for row in map(json.loads, records(result.stdout)):
        assert row["images"] == 2
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))


# ---------------------------------------------------------------- 12: one valid record per map


def test_12_records_stay_one_line_and_valid(tmp_path):
    folder = tmp_path / "in"
    first, second = images(folder, 2)
    first.rename(folder / "new\nline.png")
    os.rename(bytes(second), os.fsencode(folder) + b"/caf\xe9.png")  # Latin-1, not UTF-8
    for fmt in ("paths", "tsv", "jsonl"):
        result = cli("run", folder, "-o", tmp_path / fmt, *TINY, "--format", fmt)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode("utf-8").splitlines()  # valid UTF-8
        assert len(lines) == 2
        if fmt == "jsonl":
            names = {os.fsencode(json.loads(line)["input"]).split(b"/")[-1] for line in lines}
            assert names == {b"caf\xe9.png", b"new\nline.png"}
        else:
            assert any("new\\nline.png" in line for line in lines)
            assert any("caf\\xe9.png" in line for line in lines)


def test_12_null_separated_paths_in_and_out(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    (x,) = images(folder, 1)
    odd = folder / "new\nline.png"
    x.rename(odd)
    result = cli("run", "-0", "-", "-o", out, *TINY, stdin=bytes(odd) + b"\0")
    assert result.returncode == 0, result.stderr
    mirrored = out / str(odd).lstrip("/")
    assert result.stdout.split(b"\0") == [bytes(mirrored) + b".c4.overlay.png", b""]


# ---------------------------------------------------------------- 13: messages


def test_13_no_input_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hi")
    for folder in ("empty", "text"):
        result = cli("run", tmp_path / folder, "-o", tmp_path / "out", *TINY)
        assert result.returncode == 1 and len(errors(result.stderr)) == 1
        assert b"no input images" in result.stderr


def test_13_gifs_in_a_folder_are_read_as_when_named(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "a.gif")
    result = cli("run", tmp_path, "-o", tmp_path / "out", *TINY)
    assert result.returncode == 0 and len(records(result.stdout)) == 1


def test_13_unwritable_out_fails_before_the_model_runs(tmp_path):
    (x,) = images(tmp_path, 1)
    (tmp_path / "file").write_text("")
    result = cli("run", x, "-o", tmp_path / "file" / "out", *TINY)
    assert result.returncode == 1 and b"layer" not in result.stderr
    one_error_naming(result.stderr, "out", "cannot write to the output folder")


def test_13_decoder_warnings_name_the_file(tmp_path):
    (x,) = images(tmp_path, 1)
    data = x.read_bytes()
    chunk = b"\0\0\0\x0atEXtComment\0hi\0\0\0\0"  # a bad CRC: libpng warns and goes on
    x.write_bytes(data[:33] + chunk + data[33:])
    result = cli("run", x, "-o", tmp_path / "out", *TINY)
    assert result.returncode == 0
    warned = [line for line in result.stderr.decode().splitlines() if "libpng" in line]
    assert warned and all(x.name in line for line in warned), warned


def test_13_weights_messages(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(WeightsError, match="is a folder"):
        load_state_dict_file(model, str(tmp_path))
    torch.save({"weight": torch.zeros(2, 2), "extra": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"missing key\(s\): bias.*unexpected key\(s\): extra"):
        load_state_dict_file(model, str(tmp_path / "w.pt"))
    torch.save({"weight": SimpleNamespace()}, tmp_path / "evil.pt", pickle_module=pickle)
    with pytest.raises(WeightsError) as refused:
        load_state_dict_file(model, str(tmp_path / "evil.pt"))
    assert "refused" in str(refused.value) and "weights_only" not in str(refused.value)


def test_leaves_no_temp_files(tmp_path):
    folder = tmp_path / "in"
    images(folder, 2)
    assert cli("run", folder, "-o", tmp_path / "out", *TINY).returncode == 0
    no_temp_files(tmp_path / "out")


def test_13_library_warnings_are_one_line(tmp_path):
    (x,) = images(tmp_path, 1)
    result = cli(
        "run", x, "-o", tmp_path / "out", "--model", "tinymodels:warns", "--input-size", "64"
    )
    assert result.returncode == 0
    text = result.stderr.decode()
    assert "scorecam: warning: UserWarning: something odd" in text
    assert "second line" not in text and "warnings.warn" not in text
