"""The CLI side of issue 9: input sizes, layouts in `scorecam layers`, one-line refusals."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from test_cli import TINY, scorecam, write_image

from scorecam_cli.cli import main


def test_vit_at_a_size_it_cannot_take_exits_2_with_one_line(tmp_path):
    image = write_image(tmp_path / "x.png")
    result = scorecam(
        "run",
        str(image),
        "--model",
        "vit_b_16",
        "--weights",
        "none",
        "--input-size",
        "64",
        "-o",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "64x64" in lines[0] and "native size: 224x224" in lines[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_input_size_limits_and_forms(tmp_path):
    image = str(write_image(tmp_path / "x.png"))
    for size in ("100000", "8", "64x", "abc", "0x64"):
        result = CliRunner().invoke(main, ["run", image, *TINY[:2], "--input-size", size])
        assert result.exit_code == 2, size
        assert len(result.stderr.strip().splitlines()) == 1 and "--input-size" in result.stderr
    out = tmp_path / "out"
    args = ["run", image, *TINY[:2], "--input-size", "48x80", "-o", str(out), "--format", "tsv"]
    result = CliRunner().invoke(main, [*args, "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert len(list(Path(out).glob("*.npy"))) == 1


def test_layers_lists_only_explainable_layers_with_layouts():
    result = CliRunner().invoke(main, ["layers", "swin_t", "--input-size", "64"])
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert ["norm", "768x2x2", "nhwc", "default"] in rows
    assert ["features.0.0", "96x16x16", "nchw"] in rows
    assert all(row[2] in ("nchw", "nhwc") for row in rows)
    assert not any(row[0] in ("avgpool", "head", "flatten") for row in rows)
    every = CliRunner().invoke(main, ["layers", "swin_t", "--input-size", "64", "--all"])
    assert "head\t1000\t-" in every.stdout.splitlines()


def test_layers_of_vit_uses_the_native_size_and_tokens():
    result = CliRunner().invoke(main, ["layers", "vit_b_32"])
    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert ["encoder.layers.encoder_layer_11.ln_1", "768x7x7", "tokens+1", "default"] in rows


def test_layout_option_reads_a_layer_as_asked(tmp_path):
    image = str(write_image(tmp_path / "x.png"))
    base = ["run", image, *TINY, "-o", str(tmp_path / "o"), "--method", "gradcam"]
    wrong = CliRunner().invoke(main, [*base, "--layer", "relu", "--layout", "tokens"])
    assert wrong.exit_code == 2 and "no tokens map" in wrong.stderr
    right = CliRunner().invoke(main, [*base, "--layer", "relu", "--layout", "nchw"])
    assert right.exit_code == 0, right.output
