"""The ``scorecam`` command: CliRunner for the helpers, the installed entry point for `run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from scorecam_cli.cli import main

TESTS = Path(__file__).parent
TINY = ["--model", "tinymodels:tiny", "--input-size", "64", "--workers", "0"]


def scorecam(*args: str, stdin: str | None = None, cwd: Path | None = None):
    """Run the installed ``scorecam`` entry point; tests/ is on PYTHONPATH for tinymodels."""
    exe = shutil.which("scorecam", path=str(Path(sys.executable).parent)) or "scorecam"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def write_image(path: Path, height: int = 48, width: int = 80, channels: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    shape = (height, width) if channels == 1 else (height, width, channels)
    assert cv2.imwrite(str(path), rng.integers(0, 255, shape, dtype=np.uint8))
    return path


def test_version_and_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.startswith("scorecam, version ")
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "run" in result.output and "layers" in result.output


def test_models_lists_names_on_stdout():
    result = CliRunner().invoke(main, ["models", "resnet5*"])
    assert result.exit_code == 0
    assert result.stdout.split() == ["resnet50"]


def test_layers_marks_the_default():
    result = CliRunner().invoke(main, ["layers", "efficientnet_lite0"])
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert ["_swish:1", "1280x7x7", "nchw", "default"] in rows
    assert ["_swish:0", "32x112x112", "nchw"] in rows
    assert sum(len(row) == 4 for row in rows) == 1


def test_layers_of_resnet18():
    result = CliRunner().invoke(main, ["layers", "resnet18"])
    assert result.exit_code == 0
    assert "layer4\t512x7x7\tnchw\tdefault" in result.stdout.splitlines()


def test_unknown_model_is_a_one_line_usage_error():
    result = CliRunner().invoke(main, ["layers", "nosuchmodel"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuchmodel" in lines[0] and "scorecam models" in lines[0]


def test_missing_weights_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    image = write_image(tmp_path / "a.png")
    result = CliRunner().invoke(
        main, ["run", str(image), "--model", "resnet50", "-o", str(tmp_path)]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "resnet50-11ad3fa6.pth" in lines[0] and str(tmp_path / "torch") in lines[0]


def test_unknown_layer_lists_close_matches(tmp_path):
    image = write_image(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["run", str(image), *TINY, "--layer", "relu2"])
    assert result.exit_code == 2
    assert "closest: relu" in result.stderr


def test_run_single_file_jsonl(tmp_path):
    image = write_image(tmp_path / "in" / "photo.png", 48, 80)
    out = tmp_path / "out"
    result = scorecam("run", str(image), "-o", str(out), *TINY, "--format", "jsonl", "-k", "2")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    keys = {"input", "overlay", "npy", "class_index", "class_name", "probability", "model"}
    assert keys | {"layer", "method", "forward_passes", "forward_passes_saved"} <= set(records[0])
    assert records[0]["class_index"] != records[1]["class_index"]
    assert records[0]["layer"] == "head_act" and records[0]["method"] == "scorecam"
    for record in records:
        cam = np.load(record["npy"])
        assert cam.shape == (48, 80) and cam.dtype == np.float32 and cam.max() > 0
        assert cv2.imread(record["overlay"]).shape == (48, 80, 3)


def test_run_nested_folder_mirrors_paths_and_reports_bad_files(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "a" / "one.png")
    write_image(root / "a" / "b" / "two.jpg", 30, 40)
    write_image(root / "gray.png", channels=1)
    write_image(root / "rgba.png", channels=4)
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    good = (root / "a" / "one.png").read_bytes()
    (root / "a" / "corrupt.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    result = scorecam("run", str(root), "-o", str(out), *TINY, "--format", "tsv")
    assert result.returncode == 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.overlay.png"))
    names = [p.split(".c")[0] for p in written]
    assert names == ["a/b/two.jpg", "a/one.png", "gray.png", "rgba.png"]
    assert len(result.stdout.splitlines()) == 4
    errors = result.stderr.strip().splitlines()
    for bad in ("empty.png", "text.jpg", "corrupt.png"):
        assert sum(bad in line and "error" in line for line in errors) == 1
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert np.load(next(out.glob("a/b/two.jpg.c*.npy"))).shape == (30, 40)


def test_run_reads_paths_from_stdin_and_skips_existing(tmp_path):
    first = write_image(tmp_path / "x" / "first.png")
    second = write_image(tmp_path / "x" / "second.png")
    out = tmp_path / "out"
    listing = f"./x/first.png\n\n{second}\n"
    result = scorecam("run", "-", "-o", str(out), *TINY, cwd=tmp_path, stdin=listing)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert (out / "x" / "first.png.c0.overlay.png").exists() or list(out.glob("x/first.png.c*"))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    again = scorecam(
        "run", "-", "-o", str(out), *TINY, "--skip-existing", cwd=tmp_path, stdin=listing
    )
    assert again.returncode == 0 and again.stdout == ""
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*")} == stamps
    refused = scorecam("run", str(first), "-o", str(out / "x"), *TINY)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr


def test_closed_stdout_ends_quietly(tmp_path):
    folder = tmp_path / "many"
    for i in range(6):
        write_image(folder / f"{i}.png")
    command = [
        shutil.which("scorecam", path=str(Path(sys.executable).parent)) or "scorecam",
        "run",
        str(folder),
        "-o",
        str(tmp_path / "out"),
        *TINY,
        "--image-batch",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert producer.stdout is not None and producer.stderr is not None
    first = producer.stdout.readline()
    producer.stdout.close()  # what `| head -n 1` does
    stderr = producer.stderr.read().decode()
    producer.wait(timeout=300)
    assert first.strip().endswith(b".overlay.png")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


@pytest.mark.parametrize("method", ["gradcam", "faster-scorecam"])
def test_run_other_methods(tmp_path, method):
    image = write_image(tmp_path / "a.png")
    result = CliRunner().invoke(
        main, ["run", str(image), "-o", str(tmp_path / "o"), *TINY, "--method", method]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(".overlay.png")


def test_eval_table_and_jsonl(tmp_path):
    folder = tmp_path / "imgs"
    for i in range(3):
        write_image(folder / f"{i}.png")
    args = [
        "eval",
        str(folder),
        *TINY,
        "--steps",
        "4",
        "--method",
        "scorecam",
        "--method",
        "gradcam",
    ]
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0, table.output
    header, *rows = [line.split() for line in table.stdout.splitlines()]
    assert header[:2] == ["method", "images"] and "insertion_auc" in header
    assert [row[0] for row in rows] == ["scorecam", "gradcam"]
    for row in rows:
        values = dict(zip(header, row, strict=True))
        assert values["images"] == "3"
        assert 0 <= float(values["average_drop_percent"]) <= 100
        assert 0 <= float(values["deletion_auc"]) <= 1 and 0 <= float(values["insertion_auc"]) <= 1
    jsonl = CliRunner().invoke(main, [*args, "--format", "jsonl", "--sanity"])
    assert jsonl.exit_code == 0, jsonl.output
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["method"] for r in records] == ["scorecam", "gradcam"]
    for record in records:
        assert record["sanity"][-1]["randomised"] == record["sanity"][-1]["of"]
        assert record["sanity_spearman_fully_random"] < 0.5  # the maps change with the model


def test_decoding_stays_in_process_only_for_one_batch_of_named_files(tmp_path):
    from scorecam_cli.cli.options import decode_workers

    files = []
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
        files.append(str(tmp_path / name))
    assert decode_workers(None, files, image_batch=8) == 0  # nothing to overlap: no fork
    assert decode_workers(None, files, image_batch=2) == 1  # more than one batch
    assert decode_workers(None, [str(tmp_path)], image_batch=8) == 1  # a folder: any size
    assert decode_workers(None, ["-"], image_batch=8) == 1  # stdin: any length
    assert decode_workers(None, [*files[:1], str(tmp_path / "missing.png")], 8) == 1
    assert decode_workers(3, files, image_batch=8) == 3  # --workers wins


def test_exit_runs_atexit_handlers_and_keeps_every_record(tmp_path):
    """The entry point ends without the interpreter's teardown, but after atexit handlers and
    with stdout flushed: a handler registered by a factory model still writes its file."""
    marker = tmp_path / "atexit-ran"
    (tmp_path / "atexit_model.py").write_text(
        "import atexit, pathlib\n"
        "from tinymodels import tiny\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "def model():\n"
        "    return tiny()\n"
    )
    image = write_image(tmp_path / "in.png")
    args = ["--model", "atexit_model:model", "--input-size", "64", "-k", "3"]
    done = scorecam("run", str(image), "-o", str(tmp_path / "out"), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    assert marker.read_text() == "yes"
