"""User model code is untrusted (issue 21, section 3) and the run's own reporting holds under
hostile names and repeated Ctrl-C (section 4): all through the installed entry point, with
factories written into the test's own folder."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import numpy as np
from hostile import EXE, TESTS, TINY, child_env, errors, images, one_error_naming, records

from scorecam_cli.manifest import read_manifest

FACTORIES = '''
import sys
import torch
from conftest import TinyNet

print("factory module imported")  # a print at import time


class Printing(TinyNet):
    def forward(self, x):
        print("forward of", len(x))  # a print in every pass
        return super().forward(x)


def printing():
    print("building the model")
    return Printing()


class OddBatches(TinyNet):
    """Raises for every batch of more than one image that is not a masked pass (4)."""

    def forward(self, x):
        if len(x) not in (1, 4):
            raise RuntimeError(f"cannot take a batch of {len(x)}")
        return super().forward(x)


def odd_batches():
    return OddBatches()


class OneRow(TinyNet):
    """Always returns one row of logits, whatever the batch."""

    def forward(self, x):
        return super().forward(x)[:1]


def one_row():
    return OneRow()


class OutOfMemory(TinyNet):
    """Runs out of CPU memory in every pass of more than one image (the masked passes)."""

    def forward(self, x):
        if len(x) > 1:
            raise MemoryError()
        return super().forward(x)


def out_of_memory():
    return OutOfMemory()


class RaisesOnBright(TinyNet):
    """Raises for bright images (mean normalised value above 1), whatever the batch."""

    def forward(self, x):
        if bool((x.mean(dim=(1, 2, 3)) > 1.0).any()):
            raise ValueError("bright images are not for me")
        return super().forward(x)


def raises_on_bright():
    return RaisesOnBright()
'''


def factories(folder: Path) -> dict[str, str]:
    """Write the factory modules into ``folder``; the environment that imports them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "usermodels.py").write_text(textwrap.dedent(FACTORIES))
    (folder / "broken_syntax.py").write_text("def build(:\n    pass\n")
    (folder / "raises_on_import.py").write_text("raise RuntimeError('no GPU driver here')\n")
    (folder / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(TESTS), env.get("PYTHONPATH", "")])
    return env


def scorecam(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [EXE, *map(str, args)], capture_output=True, env=env, timeout=300, check=False
    )


def model(name: str) -> list[str]:
    return ["--model", f"usermodels:{name}", "--input-size", "64", "--backend", "torch"]


def test_a_model_that_prints_never_reaches_stdout(tmp_path: Path) -> None:
    env = factories(tmp_path / "code")
    inputs = images(tmp_path / "in", 2)
    ran = scorecam(env, "run", *inputs, "-o", tmp_path / "out", *model("printing"))
    assert ran.returncode == 0, ran.stderr
    assert records(ran.stdout) == sorted(str(p) for p in (tmp_path / "out").glob("*.overlay.png"))
    for said in (b"factory module imported", b"building the model", b"forward of"):
        assert said in ran.stderr
    listed = scorecam(env, "layers", "usermodels:printing", "--input-size", "64")
    assert listed.returncode == 0, listed.stderr
    assert all(line.count("\t") >= 2 for line in records(listed.stdout))
    assert b"forward of" in listed.stderr
    evaluated = scorecam(env, "eval", *inputs, *model("printing"), "--format", "jsonl")
    assert evaluated.returncode == 0, evaluated.stderr
    assert all(line.startswith("{") for line in records(evaluated.stdout))
    assert len(records(evaluated.stdout)) == 2  # scorecam and gradcam


def test_factory_modules_that_fail_to_import_are_one_line_exit_2(tmp_path: Path) -> None:
    env = factories(tmp_path / "code")
    (image,) = images(tmp_path / "in", 1)
    for module, words in [
        ("broken_syntax", ("SyntaxError",)),
        ("raises_on_import", ("RuntimeError", "no GPU driver here")),
        ("exits_on_import", ("SystemExit",)),
    ]:
        ran = scorecam(env, "run", image, "-o", tmp_path / "out", "--model", f"{module}:build")
        assert ran.returncode == 2, ran.stderr
        line = one_error_naming(ran.stderr, module, "cannot import model factory", *words)
        assert len(errors(ran.stderr)) == 1, line
        assert ran.stdout == b""


def test_a_model_that_fails_at_some_batch_sizes_explains_image_by_image(tmp_path: Path) -> None:
    env = factories(tmp_path / "code")
    inputs = images(tmp_path / "in", 3)
    odd = scorecam(env, "run", *inputs, "-o", tmp_path / "odd", *model("odd_batches"))
    plain = scorecam(env, "run", *inputs, "-o", tmp_path / "plain", *TINY, "--backend", "torch")
    assert odd.returncode == 0 and errors(odd.stderr) == [], odd.stderr
    assert len(records(odd.stdout)) == 3
    for npy in (tmp_path / "plain").glob("*.npy"):  # the same maps, one image at a time
        np.testing.assert_allclose(np.load(tmp_path / "odd" / npy.name), np.load(npy), rtol=1e-5)
    assert plain.returncode == 0


def test_wrong_batch_sizes_and_memory_errors_fail_each_input_in_one_line(tmp_path: Path) -> None:
    env = factories(tmp_path / "code")
    inputs = images(tmp_path / "in", 2)
    for name, words in [
        ("one_row", ("returned 1 rows for a batch of",)),
        ("out_of_memory", ("MemoryError",)),
    ]:
        ran = scorecam(env, "run", *inputs, "-o", tmp_path / name, *model(name))
        assert ran.returncode == 1 and ran.stdout == b"", ran.stderr
        for path in inputs:
            one_error_naming(ran.stderr, path.name, *words)
        assert not list((tmp_path / name).glob("*.npy"))


def test_a_model_that_raises_on_one_input_fails_only_that_input(tmp_path: Path) -> None:
    env = factories(tmp_path / "code")
    good = images(tmp_path / "in", 2)
    bright = tmp_path / "in" / "white.png"
    bright.write_bytes((tmp_path / "in" / "im00.png").read_bytes())
    import cv2

    assert cv2.imwrite(str(bright), np.full((24, 32, 3), 255, np.uint8))
    ran = scorecam(env, "run", tmp_path / "in", "-o", tmp_path / "out", *model("raises_on_bright"))
    assert ran.returncode == 1
    one_error_naming(ran.stderr, "white.png", "ValueError", "bright images are not for me")
    assert sorted(records(ran.stdout)) == sorted(
        str(tmp_path / "out" / f"{p.name}.c{c}.overlay.png")
        for p in good
        for c in [_class_of(tmp_path / "out", p.name)]
    )
    eval_run = scorecam(env, "eval", tmp_path / "in", *model("raises_on_bright"))
    assert eval_run.returncode == 1
    one_error_naming(eval_run.stderr, "white.png", "ValueError")


def _class_of(out: Path, name: str) -> str:
    (npy,) = out.glob(f"{name}.c*.npy")
    return npy.name.removeprefix(f"{name}.c").removesuffix(".npy")


def test_error_lines_escape_names_as_records_do(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "evil\nname\x1b[31m.png"
    bad.write_bytes(b"not an image")
    ran = subprocess.run(
        [EXE, "run", bad, "-o", tmp_path / "out", *TINY],
        capture_output=True,
        env=child_env(),
        timeout=300,
    )
    assert ran.returncode == 1
    (line,) = errors(ran.stderr)
    assert "evil\\nname\\x1b[31m.png" in line and "\x1b" not in ran.stderr.decode()


def test_repeated_ctrl_c_reports_every_map_written(tmp_path: Path) -> None:
    images(tmp_path / "in", 12, 1200, 1600)  # big maps: the writes take a while
    out = tmp_path / "out"
    args = ["run", tmp_path / "in", "-o", out, *TINY, "--image-batch", "2"]
    child = subprocess.Popen(
        [EXE, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        bufsize=0,
    )
    assert child.stdout is not None
    first = child.stdout.readline()
    for _ in range(3):  # Ctrl-C, and again, and again, while maps are being written
        child.send_signal(signal.SIGINT)
    rest, err = child.communicate(timeout=300)
    # 130 when the Ctrl-C came before the last map (always, in practice: 11 big maps were left);
    # 0 only on a machine so fast that the run had ended: either way every map is reported.
    assert child.returncode in (130, 0), err
    lines = records(first + rest)
    written = sorted(str(p).replace(".npy", ".overlay.png") for p in out.glob("*.npy"))
    assert sorted(lines) == written and errors(err) == []
    assert len(read_manifest(out).entries) == len(written)
    assert f"{len(written)} maps written".encode() in err


def test_eval_on_an_empty_shard_exits_0_as_run_does(tmp_path: Path) -> None:
    (image,) = images(tmp_path / "in", 1)
    from scorecam_cli.shards import shard_of

    relative = Path(image.name)
    empty = next(f"{i}/2" for i in range(2) if shard_of(relative, 2) != i)
    for command in (["run", image, "-o", tmp_path / "out"], ["eval", image]):
        ran = subprocess.run(
            [EXE, *map(str, command), *TINY, "--shard", empty],
            capture_output=True,
            env=child_env(),
            timeout=300,
        )
        assert ran.returncode == 0, (command, ran.stderr)
        assert ran.stdout == b"" and errors(ran.stderr) == []
