"""Localisation: box files (CSV, Pascal VOC, hostile ones), the metrics on hand-built maps, and a
CNN trained on the synthetic task whose Score-CAM maps point at each class's own object."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from synthetic import CLASS_NAMES, SyntheticTask

from scorecam_cli import boxes as box_files
from scorecam_cli.boxes import Box, BoxSet, by_class, fit_boxes, read_boxes
from scorecam_cli.cam import compute_cams, upsample_maps
from scorecam_cli.errors import BadBoxFile
from scorecam_cli.layers import default_layer
from scorecam_cli.localisation import (
    box_area_share,
    box_mask,
    energy_pointing_game,
    localisation_scores,
    pointing_game,
    summarise,
)
from scorecam_cli.models.base import imagenet_categories

LABELS = ["cat", "Dog", "bird"]


pytestmark = pytest.mark.usefixtures("one_thread")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- Metrics on hand-built maps -------------------------------------------------------------------


def test_box_mask_covers_pixels_whose_centre_is_inside():
    mask = box_mask(torch.tensor([[1.0, 2.0, 4.0, 3.0]]), (4, 5))  # columns 1-3, row 2
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[2, 1:4] = True
    assert torch.equal(mask, expected)
    # Fractional corners: centres 0.5 and 1.5 lie in [0.4, 1.6), no centre lies in [0.6, 1.4).
    assert box_mask(torch.tensor([[0.4, 0.0, 1.6, 1.0]]), (2, 3)).sum() == 2
    assert box_mask(torch.tensor([[0.6, 0.0, 1.4, 1.0]]), (2, 3)).sum() == 0
    # The union of two overlapping boxes; parts outside the image ignored; no boxes: empty.
    union = box_mask(torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 9.0, 9.0]]), (3, 3))
    assert union.sum() == 4 + 4 - 1
    assert box_mask(torch.zeros(0, 4), (3, 3)).sum() == 0


def point_map(points: list[tuple[int, int]], size: tuple[int, int] = (10, 10)) -> torch.Tensor:
    """(1, H, W) zeros with 1 at each (y, x)."""
    cam = torch.zeros(1, *size)
    for y, x in points:
        cam[0, y, x] = 1.0
    return cam


def corner_mask(size: tuple[int, int] = (10, 10)) -> torch.Tensor:
    """(1, H, W): the box covering rows 0-2 and columns 0-2."""
    return box_mask(torch.tensor([[0.0, 0.0, 3.0, 3.0]]), size)[None]


def test_pointing_game_against_hand_computed_distances():
    box = corner_mask()
    inside = point_map([(1, 2)])
    assert pointing_game(inside, box, tolerance=0).tolist() == [True]
    # Peak at (y 2, x 7): the nearest boxed pixel is (2, 2), 5 pixels away.
    beside = point_map([(2, 7)])
    assert pointing_game(beside, box, tolerance=0).tolist() == [False]
    assert pointing_game(beside, box, tolerance=4.9).tolist() == [False]
    assert pointing_game(beside, box, tolerance=5).tolist() == [True]
    # Peak at (5, 5): (2, 2) is sqrt(18) = 4.243 pixels away.
    diagonal = point_map([(5, 5)])
    assert pointing_game(diagonal, box, tolerance=4.2).tolist() == [False]
    assert pointing_game(diagonal, box, tolerance=4.25).tolist() == [True]
    assert pointing_game(diagonal, box).tolist() == [True]  # the default tolerance is 15 px
    assert pointing_game(beside, box, tolerance=1e12).tolist() == [True]  # no disc is built


def test_pointing_game_ties_take_the_first_maximum_and_a_constant_map_misses():
    far_corner = box_mask(torch.tensor([[0.0, 9.0, 1.0, 10.0]]), (10, 10))[None]  # pixel (9, 0)
    two_peaks = point_map([(0, 9), (9, 0)])  # row-major order: (0, 9) comes first
    assert pointing_game(two_peaks, far_corner, tolerance=0).tolist() == [False]
    assert pointing_game(point_map([(9, 0)]), far_corner, tolerance=0).tolist() == [True]
    flat = torch.full((1, 10, 10), 3.0)
    assert pointing_game(flat, corner_mask(), tolerance=100).tolist() == [False]


def test_energy_pointing_game_against_a_hand_computed_share():
    cam = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # normalised: 0, 1/3, 2/3, 1; total 2
    right_column = box_mask(torch.tensor([[1.0, 0.0, 2.0, 2.0]]), (2, 2))[None]
    top_row = box_mask(torch.tensor([[0.0, 0.0, 2.0, 1.0]]), (2, 2))[None]
    assert energy_pointing_game(cam, right_column).item() == pytest.approx((1 / 3 + 1) / 2)
    assert energy_pointing_game(cam, top_row).item() == pytest.approx((1 / 3) / 2)
    # Min-max normalised first: an offset and a scale change nothing.
    assert energy_pointing_game(5 * cam - 7, right_column).item() == pytest.approx(2 / 3)
    assert energy_pointing_game(torch.ones(1, 2, 2), top_row).item() == 0.0  # no energy


def test_box_area_share_and_means_over_batches():
    mask = box_mask(torch.tensor([[0.0, 0.0, 3.0, 1.0]]), (4, 5))[None]  # 3 of 20 pixels
    assert box_area_share(mask).item() == pytest.approx(0.15)
    hit = localisation_scores(point_map([(0, 1)], (4, 5)), mask, tolerance=0)
    miss = localisation_scores(point_map([(3, 4)], (4, 5)), mask, tolerance=0)
    assert hit.energy.item() == pytest.approx(1.0) and miss.energy.item() == 0.0
    total = summarise([hit, miss])
    assert (total.pointing_game, total.images) == (0.5, 2)
    assert total.energy_pointing_game == pytest.approx(0.5)
    assert total.box_area_share == pytest.approx(0.15)


def test_metrics_refuse_what_they_cannot_score():
    cam = point_map([(1, 1)])
    with pytest.raises(ValueError, match="at least one boxed pixel"):
        pointing_game(cam, torch.zeros(1, 10, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        energy_pointing_game(torch.full((1, 10, 10), float("nan")), corner_mask())
    with pytest.raises(ValueError, match="do not fit"):
        pointing_game(cam, corner_mask((10, 9)))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(cam, corner_mask(), tolerance=-1)
    with pytest.raises(ValueError, match="no maps"):
        summarise([])


# -- CSV box files --------------------------------------------------------------------------------


def test_csv_boxes_by_index_and_name_several_per_image(tmp_path: Path):
    source = write(
        tmp_path / "boxes.csv",
        "note,x1,y1,image,class,x0,y0\n"  # any column order, extra columns ignored
        "a,30,40,./photos/a.jpg,1,10,20\n"
        "b,50,60,photos/a.jpg,DOG,5,6\n"  # a name, case-insensitive
        "c,9,9,b.png,Cat,0,0\n"
        "\n",  # blank lines are skipped
    )
    found = read_boxes(source, LABELS)
    assert found.warnings == ()
    assert dict(found.boxes) == {
        "photos/a.jpg": (Box(1, 10, 20, 30, 40), Box(1, 5, 6, 50, 60)),
        "b.png": (Box(0, 0, 0, 9, 9),),
    }
    assert found.lookup(Path("photos/a.jpg")) == "photos/a.jpg"  # relative to the input folder
    assert found.lookup("a.jpg", path="photos/a.jpg") == "photos/a.jpg"  # the path as given
    assert found.lookup("elsewhere/b.png") == "b.png"  # a bare name in the file
    assert found.lookup("c.png") is None
    assert found.unmatched(["photos/a.jpg"]) == [
        f"{source}: boxes for 'b.png': no such input image"
    ]
    assert by_class(found.boxes["photos/a.jpg"]) == {1: found.boxes["photos/a.jpg"]}


def test_hostile_csv_rows_give_one_warning_each(tmp_path: Path):
    source = write(
        tmp_path / "boxes.csv",
        "image,class,x0,y0,x1,y1\n"
        "ok.jpg,0,1,1,5,5\n"  # line 2: kept
        "a.jpg,0,abc,1,5,5\n"  # line 3: not a number
        "a.jpg,0,nan,1,5,5\n"  # line 4: not finite
        "a.jpg,0,1,1,inf,5\n"  # line 5: not finite
        "a.jpg,0,5,1,5,5\n"  # line 6: x1 <= x0
        "a.jpg,0,1,9,5,2\n"  # line 7: y1 <= y0
        "a.jpg,horse,1,1,5,5\n"  # line 8 and 9: an unknown class, reported once
        "b.jpg,horse,1,1,5,5\n"
        "a.jpg,3,1,1,5,5\n"  # line 10: index out of range
        "a.jpg,-1,1,1,5,5\n"  # line 11: negative
        "a.jpg,0,1\n"  # line 12: too few fields
        ",0,x,1,5,5\n"  # line 13: no image (one warning, though x0 is bad too)
        f"a.jpg,{'9' * 5000},1,1,5,5\n"  # line 14: a huge index
        f"a.jpg,{'x' * 5000},1,1,5,5\n",  # line 15: a huge name, cut short in the warning
    )
    found = read_boxes(source, LABELS)
    assert dict(found.boxes) == {"ok.jpg": (Box(0, 1, 1, 5, 5),)}
    text = "\n".join(found.warnings)
    assert len(found.warnings) == 12, text
    assert max(len(line) for line in found.warnings) < 300
    assert all(line.startswith(str(source)) for line in found.warnings)
    for expected in (
        "line 3: x0 'abc' is not a finite number",
        "line 4: x0 'nan'",
        "line 5: x1 'inf'",
        "line 6: empty box",
        "line 7: empty box",
        "line 12: 3 fields, too few for the header's columns",
        "line 13: no image named",
        "class 'horse': not one of the model's class names; 2 boxes skipped",
        "class '3': index out of range (the model has 3 classes)",
        "class '-1': a negative class index",
        "class '99999999",
        "class 'xxxxxxxx",
    ):
        assert expected in text, text


def test_csv_warnings_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(box_files, "MAX_WARNINGS", 3)
    rows = "".join(f"a.jpg,0,{i},0,{i},5\n" for i in range(10))  # ten empty boxes
    found = read_boxes(write(tmp_path / "b.csv", "image,class,x0,y0,x1,y1\n" + rows), LABELS)
    assert len(found.warnings) == 4 and found.warnings[-1].endswith(": 7 more warnings")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"image,label,left,top,right,bottom\na.jpg,0,1,1,2,2\n", "missing: class, x0, y0"),
        (b"image,class,x0,y0,x1,y1\na\xff.jpg,0,1,1,2,2\n", "not UTF-8"),
        (b'image,class,x0,y0,x1,y1\n"' + b"x" * 200_000 + b'",0,1,1,2,2\n', "not readable as CSV"),
    ],
)
def test_unreadable_csv_files_are_one_line_errors(tmp_path: Path, content: bytes, reason: str):
    source = tmp_path / "boxes.csv"
    source.write_bytes(content)
    with pytest.raises(BadBoxFile, match=reason) as caught:
        read_boxes(source, LABELS)
    assert str(caught.value).startswith(str(source)) and "\n" not in str(caught.value)


def test_box_files_that_are_not_regular_files_or_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with pytest.raises(BadBoxFile, match="cannot read"):
        read_boxes(tmp_path / "absent.csv", LABELS)
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)  # opened without blocking, refused before any read
    with pytest.raises(BadBoxFile, match="not a regular file"):
        read_boxes(fifo, LABELS)
    monkeypatch.setattr(box_files, "MAX_CSV_BYTES", 10)
    with pytest.raises(BadBoxFile, match="over the limit"):
        read_boxes(write(tmp_path / "big.csv", "image,class,x0,y0,x1,y1\n"), LABELS)
    with pytest.raises(BadBoxFile, match=r"no \.xml files"):
        read_boxes(write(tmp_path / "folder" / "notes.txt", "x").parent, LABELS)


def test_boxes_outside_the_image_are_clipped_or_dropped():
    boxes = [
        Box(0, 2, 2, 8, 8),  # inside: kept as it is
        Box(0, -1, -0.5, 10.5, 6),  # at most 1 px outside (rounding): clipped silently
        Box(1, -20, 3, 5, 30),  # far outside: clipped, with a warning
        Box(2, 12, 0, 20, 5),  # right of the 10 px wide image: dropped
        Box(2, 9.6, 0, 10.4, 5),  # clipped to (9.6, 10): no pixel centre left (9.5 < 9.6)
    ]
    kept, warnings = fit_boxes(boxes, (8, 10), "a.jpg")
    assert kept == (Box(0, 2, 2, 8, 8), Box(0, 0, 0, 10, 6), Box(1, 0, 3, 5, 8))
    assert warnings == [
        "a.jpg: box (-20, 3, 5, 30) of class 1 reaches outside the 10x8 image; clipped",
        "a.jpg: box (12, 0, 20, 5) of class 2 lies outside the 10x8 image; dropped",
        "a.jpg: box (9.6, 0, 10.4, 5) of class 2 lies outside the 10x8 image; dropped",
    ]


# -- Pascal VOC XML -------------------------------------------------------------------------------


def voc(filename: str, *objects: tuple[str, tuple[str, str, str, str]]) -> str:
    parts = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1) in objects
    )
    return (
        f"<annotation><folder>val</folder><filename>{filename}</filename>"
        f"<size><width>500</width><height>375</height><depth>3</depth></size>{parts}</annotation>"
    )


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<annotation><filename>&lol3;</filename></annotation>"
)


def test_voc_folder_with_several_objects_and_imagenet_names(tmp_path: Path):
    folder = tmp_path / "annotations"
    # ImageNet's val annotations: a <filename> without extension, synset ids as names.
    write(
        folder / "val" / "ILSVRC2012_val_00000001.xml",
        voc(
            "ILSVRC2012_val_00000001",
            ("n01751748", ("111", "108", "441", "375")),
            ("n01440764", ("1", "1", "50", "40")),
        ),
    )
    write(folder / "b.xml", voc("b.jpg", ("tabby", ("11", "21", "30", "40"))))  # a class name
    write(folder / "README.txt", "not an annotation")  # other files are ignored
    found = read_boxes(folder, imagenet_categories())
    assert found.warnings == ()
    # VOC corners are 1-based and inclusive: (xmin - 1, ymin - 1, xmax, ymax) here.
    assert found.boxes["ILSVRC2012_val_00000001"] == (
        Box(65, 110, 107, 441, 375),  # n01751748 is class 65, sea snake
        Box(0, 0, 0, 50, 40),  # n01440764 is class 0, tench
    )
    assert found.boxes["b.jpg"] == (Box(281, 10, 20, 30, 40),)
    assert found.lookup("n01751748/ILSVRC2012_val_00000001.JPEG") == "ILSVRC2012_val_00000001"
    single = read_boxes(folder / "b.xml", imagenet_categories())  # one file works too
    assert dict(single.boxes) == {"b.jpg": (Box(281, 10, 20, 30, 40),)}


def test_hostile_voc_files_give_one_warning_each_and_the_rest_is_read(tmp_path: Path):
    folder = tmp_path / "voc"
    two = ("cat", ("1", "1", "9", "9")), ("dog", ("5", "5", "9", "x"))  # the second one is bad
    write(folder / "a.xml", voc("a.jpg", *two))
    write(folder / "b.xml", BILLION_LAUGHS)
    external = '<!DOCTYPE a SYSTEM "file:///etc/passwd"><annotation>&x;</annotation>'
    write(folder / "b2.xml", external)
    write(folder / "c.xml", "<annotation><filename>c.jpg</filename><object>")  # truncated
    write(folder / "d.xml", "<svg><filename>d.jpg</filename></svg>")
    write(folder / "e.xml", voc("", ("cat", ("1", "1", "9", "9"))))
    no_box = "<annotation><filename>f.jpg</filename><object><name>cat</name></object>"
    write(folder / "f.xml", no_box + "</annotation>")
    write(folder / "g.xml", voc("a.jpg", ("bird", ("2", "2", "3", "3"))))  # a.jpg again
    write(folder / "h.xml", voc("h.jpg", ("n01440764", ("1", "1", "2", "2"))))  # 3-class model
    zebras = ("zebra", ("1", "1", "2", "2")), ("zebra", ("1", "1", "3", "3"))
    write(folder / "i.xml", voc("i.jpg", *zebras))
    found = read_boxes(folder, LABELS)
    text = "\n".join(found.warnings)
    assert found.boxes["a.jpg"] == (Box(0, 0, 0, 9, 9), Box(2, 1, 1, 3, 3))
    assert set(found.boxes) == {"a.jpg"}  # only images with at least one good box
    for expected in (
        f"{folder / 'a.xml'}: object 2: ymax 'x' is not a finite number; box skipped",
        f"{folder / 'b.xml'}: it declares a DTD or entities",
        f"{folder / 'b2.xml'}: it declares a DTD or entities",
        f"{folder / 'c.xml'}: not valid XML",
        f"{folder / 'd.xml'}: not a Pascal VOC annotation (root <svg>",
        f"{folder / 'e.xml'}: no <filename>",
        f"{folder / 'f.xml'}: object 1: no <bndbox>",
        f"{folder / 'g.xml'}: boxes for 'a.jpg' are also in {folder / 'a.xml'}; merged",
        "class 'n01440764': an ImageNet synset id, but the model has 3 classes, not 1000",
        "class 'zebra': not one of the model's class names; 2 boxes skipped",
    ):
        assert expected in text, text
    assert len(found.warnings) == 10, text


def test_synset_ids_without_timm_are_reported_as_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(box_files, "imagenet_synsets", lambda: None)
    source = write(tmp_path / "b.csv", "image,class,x0,y0,x1,y1\na.jpg,n01440764,0,0,5,5\n")
    found = read_boxes(source, imagenet_categories())
    assert dict(found.boxes) == {}
    assert found.warnings == (
        f"{source}: class 'n01440764': ImageNet synset ids need timm "
        "(pip install 'scorecam-cli[timm]'); 1 box skipped",
    )


# -- A trained CNN on the synthetic task ----------------------------------------------------------


def test_synthetic_scenes_are_seeded_with_tight_separate_boxes():
    task = SyntheticTask()
    scenes = task.scenes(16, seed=5)
    assert torch.equal(scenes.pixels, task.scenes(16, seed=5).pixels)
    assert not torch.equal(scenes.pixels, task.scenes(16, seed=6).pixels)
    assert scenes.targets.sum(dim=1).eq(task.objects).all()
    assert scenes.targets.gather(1, scenes.labels).eq(1).all()
    x0, y0, x1, y1 = scenes.boxes.unbind(-1)  # (N, O) each
    assert (
        (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= task.size).all() and (y1 <= task.size).all()
    )
    assert ((x1 - x0 >= 2 * task.min_radius) & (x1 - x0 <= 2 * task.max_radius + 1)).all()
    first, second = scenes.boxes[:, 0], scenes.boxes[:, 1]
    apart = (first[:, 2] <= second[:, 0]) | (second[:, 2] <= first[:, 0])
    apart |= (first[:, 3] <= second[:, 1]) | (second[:, 3] <= first[:, 1])
    assert apart.all()  # one grid cell each: the boxes never overlap
    # Each box is tight: its border rows and columns hold object pixels (not the background).
    for i in range(16):
        for k in range(task.objects):
            a, b, c, d = scenes.boxes[i, k].long().tolist()
            patch = scenes.pixels[i, :, b:d, a:c]  # (3, h, w)
            background = scenes.pixels[i].median()  # objects cover under a sixth of a scene
            colour = (patch - background).abs().amax(dim=0) > 0.25  # (h, w): object pixels
            assert (
                colour[0].any() and colour[-1].any() and colour[:, 0].any() and colour[:, -1].any()
            )


def test_scorecam_of_a_trained_cnn_points_at_each_class_own_object(
    trained_cnn: tuple[torch.nn.Module, SyntheticTask], tmp_path: Path
):
    model, task = trained_cnn
    scenes = task.scenes(8, seed=2024)
    # The boxes travel through a box file, as a user's would: one row per object, by name.
    rows = [
        f"scene{i}.png,{CLASS_NAMES[int(c)]},{','.join(f'{v:g}' for v in box.tolist())}"
        for i in range(8)
        for c, box in zip(scenes.labels[i], scenes.boxes[i], strict=True)
    ]
    source = write(tmp_path / "boxes.csv", "image,class,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    found: BoxSet = read_boxes(source, list(CLASS_NAMES))
    assert found.warnings == ()

    layer = default_layer(model, (task.size, task.size)).ref
    result = compute_cams(model, layer, scenes.inputs, scenes.labels)  # the boxes' classes
    maps = upsample_maps(result.maps, (task.size, task.size))  # (8, 2, 64, 64)
    size = (task.size, task.size)
    own, other = [], []
    for i in range(8):
        classes = by_class(found.boxes[f"scene{i}.png"])
        for c in scenes.labels[i].tolist():
            own.append(box_mask(torch.tensor([b.coords for b in classes[c]]), size))
            (other_class,) = set(classes) - {c}
            other.append(box_mask(torch.tensor([b.coords for b in classes[other_class]]), size))
    cams = maps.flatten(0, 1)  # (16, 64, 64), in the same (scene, class) order as the masks
    on_own = localisation_scores(cams, torch.stack(own), tolerance=0)
    on_other = localisation_scores(cams, torch.stack(other), tolerance=0)

    assert on_own.hits.all(), on_own.hits  # every maximum inside its own class's box
    assert not on_other.hits.any(), on_other.hits  # never inside the other object's
    assert (on_own.energy > on_other.energy + 0.1).all(), (on_own.energy, on_other.energy)
    assert on_own.energy.mean() > 3 * on_other.energy.mean()
    summary = summarise([on_own])
    assert summary.energy_pointing_game > 5 * summary.box_area_share, summary
