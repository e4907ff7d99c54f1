"""``scorecam report`` without a browser: thumbnails, reuse on rebuild, missing inputs, links."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner
from report_fixtures import write_synthetic_run

from scorecam_cli.cli import main
from scorecam_cli.manifest import MANIFEST_NAME
from scorecam_cli.report.build import build_report
from scorecam_cli.report.thumbnails import shrink, write_thumbnail


def page_data(html: Path) -> dict:
    text = html.read_text(encoding="utf-8")
    return json.loads(text.split('type="application/json">')[1].split("</script>")[0])


def test_thumbnails_are_small_webp_and_reused_until_the_source_changes(tmp_path: Path) -> None:
    source = tmp_path / "big.png"
    rng = np.random.default_rng(1)
    assert cv2.imwrite(str(source), rng.integers(0, 255, (300, 500, 3), dtype=np.uint8))
    target = tmp_path / "thumbs" / "big.png.webp"
    assert write_thumbnail(source, target, 100) is True
    thumb = cv2.imread(str(target))
    assert thumb is not None and thumb.shape == (60, 100, 3)
    assert write_thumbnail(source, target, 100) is False  # unchanged source: reused
    os.utime(source, ns=(1, 1))  # the source was rewritten (a newer run, --overwrite)
    assert write_thumbnail(source, target, 100) is True
    assert [p.name for p in target.parent.iterdir()] == ["big.png.webp"]  # no temp left
    small = np.zeros((10, 20, 3), np.uint8)
    assert shrink(small, 100) is small  # never enlarged


def test_rebuild_reuses_thumbnails_and_remakes_changed_ones(tmp_path: Path) -> None:
    maps = write_synthetic_run(tmp_path, inputs=3, classes=2)
    out = tmp_path / "out"
    first = build_report(out)
    assert (first.cards, first.maps) == (3, maps)
    assert (first.thumbnails_written, first.thumbnails_reused) == (maps + 3, 0)
    overlay = out / "img00001.png.c1.overlay.png"
    os.utime(overlay, ns=(5, 5))
    second = build_report(out)
    assert (second.thumbnails_written, second.thumbnails_reused) == (1, maps + 2)


def test_page_links_are_relative_and_show_no_full_size_png(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, inputs=2, classes=1)
    out = tmp_path / "out"
    html = build_report(out, tmp_path / "elsewhere" / "view.html").html
    text = html.read_text(encoding="utf-8")
    assert str(tmp_path) not in text and "://" not in text  # no absolute path, no URL, no CDN
    data = page_data(html)
    for card in data["cards"]:
        assert card["original"].startswith("view-files/w192/inputs/")
        for item in card["maps"]:
            assert item["thumb"].endswith(".webp") and (html.parent / item["thumb"]).is_file()
            assert item["href"].startswith("../out/") and (html.parent / item["href"]).is_file()
    assert re.findall(r"<script src=|<link ", text) == []  # script and style are inline


def test_cli_reports_missing_inputs_once_and_torn_lines(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, inputs=4, classes=2)
    for image in (tmp_path / "in").iterdir():
        image.unlink()  # the originals were moved away after the run
    out = tmp_path / "out"
    with (out / MANIFEST_NAME).open("a") as manifest:
        manifest.write('{"input": "x.png", "npy": "x.c')  # a killed run's torn line
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out / 'report.html'}\n"
    assert result.stderr.count("inputs not found") == 1
    assert "4 inputs not found" in result.stderr and "torn line" in result.stderr
    data = page_data(out / "report.html")
    assert len(data["cards"]) == 4 and all(card["original"] is None for card in data["cards"])


def test_cli_without_a_manifest_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "no manifest.jsonl" in result.stderr and len(result.stderr.splitlines()) == 1


def test_names_cannot_break_out_of_the_page_and_bad_overlays_lose_only_their_preview(
    tmp_path: Path,
) -> None:
    write_synthetic_run(tmp_path, inputs=2, classes=1, methods=("scorecam",))
    out = tmp_path / "out"
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    hostile = json.loads(lines[0]) | {"class_name": "</script><b>x</b>&amp;"}
    (out / MANIFEST_NAME).write_text("\n".join([json.dumps(hostile), lines[1]]) + "\n")
    (out / json.loads(lines[1])["overlay"]).write_bytes(b"not a png")
    result = build_report(out)
    assert len(result.problems) == 1 and "no image size in its header" in result.problems[0]
    text = result.html.read_text(encoding="utf-8")
    assert "</script><b>" not in text
    cards = page_data(result.html)["cards"]
    assert cards[0]["maps"][0]["class_name"] == "</script><b>x</b>&amp;"
    assert cards[1]["maps"][0]["thumb"] is None and cards[1]["maps"][0]["href"]
