"""``scorecam eval --boxes`` through the CLI on a CNN trained on the synthetic task (its Score-CAM
points at every box), hostile box files, and the boxes drawn on the report's cards."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import cv2
import pytest
import torch
from hostile import TINY, cli, errors, images
from synthetic import CLASS_NAMES, MEAN, STD, SmallCnn, SyntheticTask

SCALE = 2  # the PNGs are the scenes upscaled: maps must reach the original size to meet boxes
SCENES = 8


def synthetic_cnn() -> SmallCnn:
    """The synthetic task's CNN, for ``--model test_eval_boxes:synthetic_cnn`` (weights from the
    checkpoint the fixture trains)."""
    return SmallCnn(len(CLASS_NAMES))


@pytest.fixture(scope="session")
def task_run(
    tmp_path_factory: pytest.TempPathFactory, trained_cnn: tuple[torch.nn.Module, SyntheticTask]
) -> dict[str, Path]:
    """The session's trained CNN (conftest) saved: the checkpoint, the labels, the scenes as PNGs
    (upscaled x2) and their boxes as CSV rows by class name (one per object)."""
    root = tmp_path_factory.mktemp("synthetic")
    model, task = trained_cnn
    torch.save(model.state_dict(), root / "cnn.pth")
    (root / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")

    scenes = task.scenes(SCENES, seed=2024)
    folder = root / "scenes"
    folder.mkdir()
    rows = ["image,class,x0,y0,x1,y1"]
    for i in range(SCENES):
        rgb = scenes.rgb8(i).numpy()
        big = cv2.resize(rgb, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
        assert cv2.imwrite(str(folder / f"scene{i}.png"), big[:, :, ::-1])
        for c, box in zip(scenes.labels[i].tolist(), scenes.boxes[i].tolist(), strict=True):
            rows.append(f"scene{i}.png,{CLASS_NAMES[c]},{','.join(str(SCALE * v) for v in box)}")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"root": root, "scenes": folder, "boxes": root / "boxes.csv"}


def model_args(run: dict[str, Path]) -> list[str | Path]:
    root = run["root"]
    return [
        "--model", "test_eval_boxes:synthetic_cnn", "--weights", root / "cnn.pth",
        "--labels", root / "labels.txt", "--mean", str(MEAN), "--std", str(STD),
        "--input-size", "64",
    ]  # fmt: skip


def eval_boxes(
    run: dict[str, Path], *args: str | Path, boxes: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return cli("eval", run["scenes"], *model_args(run), "--boxes", boxes or run["boxes"], *args)


KEYS = ["method", "images", "maps", "pointing_game", "energy_pointing_game", "box_area_share"]


def test_scorecam_hits_every_box_and_the_three_formats_agree(task_run: dict[str, Path]) -> None:
    methods = ["--method", "scorecam", "--method", "gradcam"]
    done = {fmt: eval_boxes(task_run, *methods, "--format", fmt) for fmt in ("jsonl", "csv")}
    table = eval_boxes(task_run, *methods)  # the default format
    for result in (*done.values(), table):
        assert result.returncode == 0, result.stderr.decode()
        assert errors(result.stderr) == []
        assert b"warning" not in result.stderr, result.stderr.decode()

    rows = [json.loads(line) for line in done["jsonl"].stdout.decode().splitlines()]
    assert [row["method"] for row in rows] == ["scorecam", "gradcam"]
    score = rows[0]
    assert score["images"] == SCENES and score["maps"] == 2 * SCENES  # one map per box class
    assert score["pointing_game"] == 1.0
    assert score["tolerance_px"] == 15
    assert 0 < score["box_area_share"] < 0.15  # two objects of 11-17 px in 64 x 64 (x 2)
    assert score["energy_pointing_game"] > 3 * score["box_area_share"], score

    parsed = list(csv.DictReader(io.StringIO(done["csv"].stdout.decode())))
    lines = table.stdout.decode().splitlines()
    assert lines[0].split()[: len(KEYS)] == KEYS
    cells = [line.split() for line in lines[1:]]
    for row, from_csv, from_table in zip(rows, parsed, cells, strict=True):
        for n, key in enumerate(KEYS):
            assert from_csv[key] == from_table[n] == str(row[key]), key


def test_the_class_explained_is_the_box_class_not_the_top1(
    task_run: dict[str, Path], tmp_path: Path
) -> None:
    """Each object's box under the other object's class: the maps point at their own object,
    so the pointing game (strict) drops to 0 where the right boxes gave 1."""
    lines = task_run["boxes"].read_text(encoding="utf-8").splitlines()
    swapped = [lines[0]]
    for first, second in zip(lines[1::2], lines[2::2], strict=True):
        (image, class_a, *box_a), (_, class_b, *box_b) = first.split(","), second.split(",")
        swapped += [",".join([image, class_b, *box_a]), ",".join([image, class_a, *box_b])]
    wrong = tmp_path / "swapped.csv"
    wrong.write_text("\n".join(swapped) + "\n", encoding="utf-8")
    args = ["--method", "scorecam", "--tolerance", "0", "--format", "jsonl"]
    right, other = eval_boxes(task_run, *args), eval_boxes(task_run, *args, boxes=wrong)
    assert right.returncode == other.returncode == 0, other.stderr.decode()
    good, bad = json.loads(right.stdout), json.loads(other.stdout)
    assert good["pointing_game"] >= 0.9 and bad["pointing_game"] == 0.0, (good, bad)
    assert bad["energy_pointing_game"] < good["energy_pointing_game"] / 3


def test_hostile_rows_give_one_warning_each_and_the_rest_is_scored(
    task_run: dict[str, Path], tmp_path: Path
) -> None:
    rows = task_run["boxes"].read_text(encoding="utf-8").splitlines()
    kept = [row for row in rows if not row.startswith("scene7.png")]  # scene7: no boxes
    hostile = tmp_path / "hostile.csv"
    hostile.write_text(
        "\n".join(
            [
                *kept,
                "scene0.png,purple moon,1,1,5,5",  # unknown class (twice: one line)
                "scene1.png,purple moon,1,1,5,5",
                "scene0.png,red square,9,9,3,20",  # x1 <= x0
                "scene2.png,0,120,120,400,400",  # reaches outside the 128 x 128 image: clipped
                "scene3.png,1,500,500,600,600",  # wholly outside: dropped
                "absent.png,0,1,1,5,5",  # no such input
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = eval_boxes(task_run, "--method", "scorecam", "--format", "jsonl", boxes=hostile)
    assert result.returncode == 0, result.stderr.decode()
    assert errors(result.stderr) == []
    warnings = [line for line in result.stderr.decode().splitlines() if "warning" in line]
    expected = ["purple moon", "x1 <= x0", "scene2.png", "scene3.png", "'absent.png'", "scene7"]
    for word in expected:
        assert sum(word in line for line in warnings) == 1, (word, warnings)
    assert len(warnings) == len(expected), warnings
    row = json.loads(result.stdout)
    assert row["images"] == SCENES - 1  # scene7 had no boxes: not scored


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (None, 2, ["cannot read"]),  # no such file
        (b"path,label\na.png,0\n", 2, ["header", "missing"]),
        (b"\xff\xfe\x00junk", 2, ["UTF-8"]),
        (b"image,class,x0,y0,x1,y1\nnowhere.png,0,1,1,5,5\n", 1, ["no input with boxes"]),
    ],
)
def test_unreadable_or_unmatched_box_files_are_one_line_errors(
    task_run: dict[str, Path], tmp_path: Path, content: bytes | None, code: int, words: list[str]
) -> None:
    path = tmp_path / "boxes.csv"
    if content is not None:
        path.write_bytes(content)
    result = eval_boxes(task_run, "--method", "scorecam", boxes=path)
    assert result.returncode == code, result.stderr.decode()
    assert result.stdout == b""
    (line,) = errors(result.stderr)
    assert all(word in line for word in words), line


def test_voc_folder_of_several_objects(task_run: dict[str, Path], tmp_path: Path) -> None:
    """The same boxes as VOC XML (1-based, inclusive corners) give the same figures."""
    rows = list(csv.DictReader(io.StringIO(task_run["boxes"].read_text(encoding="utf-8"))))
    folder = tmp_path / "voc"
    folder.mkdir()
    for i in range(SCENES):
        objects = "".join(
            f"<object><name>{row['class']}</name><bndbox><xmin>{float(row['x0']) + 1:g}</xmin>"
            f"<ymin>{float(row['y0']) + 1:g}</ymin><xmax>{row['x1']}</xmax>"
            f"<ymax>{row['y1']}</ymax></bndbox></object>"
            for row in rows
            if row["image"] == f"scene{i}.png"
        )
        (folder / f"scene{i}.xml").write_text(
            f"<annotation><filename>scene{i}.png</filename>{objects}</annotation>",
            encoding="utf-8",
        )
    args = ["--method", "scorecam", "--format", "jsonl"]
    from_voc, from_csv = eval_boxes(task_run, *args, boxes=folder), eval_boxes(task_run, *args)
    assert from_voc.returncode == 0 and b"warning" not in from_voc.stderr, from_voc.stderr
    assert json.loads(from_voc.stdout) == json.loads(from_csv.stdout)


def test_class_and_sanity_are_usage_errors_with_boxes(tmp_path: Path) -> None:
    images(tmp_path / "in", 1)
    boxes = tmp_path / "b.csv"
    boxes.write_text("image,class,x0,y0,x1,y1\nim00.png,0,1,1,5,5\n", encoding="utf-8")
    for extra in (["--class", "1"], ["--sanity"]):
        result = cli("eval", tmp_path / "in", *TINY, "--boxes", boxes, *extra)
        assert result.returncode == 2, result.stderr.decode()
        assert "--boxes" in result.stderr.decode()


# -- The report --------------------------------------------------------------------------------


def page_data(html: Path) -> dict[str, Any]:
    text = html.read_text(encoding="utf-8")
    return json.loads(text.split('type="application/json">')[1].split("</script>")[0])


def test_report_draws_each_cards_own_boxes(tmp_path: Path) -> None:
    images(tmp_path / "in", 2, height=40, width=80)  # im00.png, im01.png
    out = tmp_path / "out"
    ran = cli("run", tmp_path / "in", *TINY, "-o", out, "--method", "scorecam")
    assert ran.returncode == 0, ran.stderr.decode()
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(
        "image,class,x0,y0,x1,y1\n"
        "im01.png,2,8,4,48,24\n"  # 10% .. 60% across, 10% .. 60% down
        "im01.png,<img src=x onerror=alert(1)>,1,1,5,5\n"  # an unknown class: a warning
        "gone.png,0,1,1,5,5\n",  # no such card: a warning
        encoding="utf-8",
    )
    made = cli("report", out, "--boxes", boxes)
    assert made.returncode == 0, made.stderr.decode()
    warnings = [line for line in made.stderr.decode().splitlines() if "warning" in line]
    assert len(warnings) == 2 and "'gone.png'" in warnings[1], warnings
    html = out / "report.html"
    cards = {card["input"].rsplit("/", 1)[-1]: card for card in page_data(html)["cards"]}
    assert cards["im00.png"]["boxes"] == []
    (drawn,) = cards["im01.png"]["boxes"]
    assert drawn == {"left": 10.0, "top": 10.0, "width": 50.0, "height": 50.0, "label": "#2"}
    assert "<img src=x" not in html.read_text(encoding="utf-8")
    assert "box-label" in html.read_text(encoding="utf-8")  # the script that draws them


def test_report_refuses_an_unreadable_box_file_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    images(tmp_path / "in", 1)
    assert cli("run", tmp_path / "in", *TINY, "-o", out).returncode == 0
    result = cli("report", out, "--boxes", tmp_path / "missing.csv")
    assert result.returncode == 2, result.stderr.decode()
    (line,) = errors(result.stderr)
    assert "missing.csv" in line
    assert not (out / "report.html").exists()


def test_the_boxes_are_outlines_over_the_right_thumbnail_in_a_browser(tmp_path: Path) -> None:
    browser = pytest.importorskip("browser")
    if not Path(browser.CHROMIUM).exists():
        pytest.skip("no chromium")
    images(tmp_path / "in", 2, height=40, width=80)
    out = tmp_path / "out"
    assert cli("run", tmp_path / "in", *TINY, "-o", out).returncode == 0
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,class,x0,y0,x1,y1\nim01.png,0,8,4,48,24\n", encoding="utf-8")
    assert cli("report", out, "--boxes", boxes).returncode == 0
    with browser.chromium_page() as session:
        browser.open_report(session, out / "report.html")
        page = session.page
        outlines = page.locator(".card .box")
        assert outlines.count() == 1
        card = page.locator(".card", has=page.locator(".box"))
        assert "im01.png" in card.locator(".input-name").inner_text()
        image = card.locator(".original img").bounding_box()
        outline = outlines.first.bounding_box()
        assert image is not None and outline is not None
        assert outline["x"] == pytest.approx(image["x"] + 0.1 * image["width"], abs=1.5)
        assert outline["width"] == pytest.approx(0.5 * image["width"], abs=1.5)
        assert outline["height"] == pytest.approx(0.5 * image["height"], abs=1.5)
        assert not session.errors, session.errors


def test_shards_split_the_images_and_count_the_others_boxes_as_matched(tmp_path: Path) -> None:
    images(tmp_path / "in", 4)
    boxes = tmp_path / "b.csv"
    rows = "".join(f"im{n:02d}.png,0,2,2,12,12\n" for n in range(4))
    boxes.write_text("image,class,x0,y0,x1,y1\n" + rows, encoding="utf-8")
    scored = 0
    for shard in ("0/2", "1/2"):
        args: list[str | Path] = ["--boxes", boxes, "--shard", shard, "--method", "scorecam"]
        result = cli("eval", tmp_path / "in", *TINY, *args, "--format", "jsonl")
        assert result.returncode == 0, result.stderr.decode()
        assert b"warning" not in result.stderr, result.stderr.decode()
        if result.stdout:  # a shard may be empty (exit 0, no rows)
            scored += json.loads(result.stdout)["images"]
    assert scored == 4
