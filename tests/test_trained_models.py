"""Models trained for real on the synthetic task, saved as a training script would, and explained
through the CLI with no factory code (issues 18 and 19): each map must point at its object.

- torchvision ``resnet18`` as a 4-class softmax model (one object per scene) with a labels file,
  and as a one-logit binary model ("is there a red square?", two objects per scene), both from
  ``--model resnet18 --weights CKPT``; explained at ``layer1`` (12 x 12 at 48 px: the default,
  ``layer4``, is 2 x 2 there);
- the 4-class model exported to ONNX (dynamo, dynamic batch) and explained as ``--model FILE.onnx``:
  its maps equal the torch model's;
- a tiny torchvision ``VisionTransformer``: no registry architecture is that small, so it is the
  factory ``synthetic:vit64`` with ``--weights CKPT``;
- a Hugging Face ResNet saved with ``save_pretrained`` (class names and preprocessing in the
  folder) and explained as ``--model DIR`` with nothing else said.

Everything is trained once per session, seeded, on one thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from hostile import cli, errors
from synthetic import (
    CLASS_NAMES,
    MEAN,
    SINGLE_LABEL,
    STD,
    Objective,
    Scenes,
    SyntheticTask,
    build_vit,
    present,
    train,
)
from torch import nn

from scorecam_cli.backends.export import export_onnx

# 48 px scenes (16 px cells): a resnet18 learns them in 60 steps, a quarter of a minute on one core.
ONE_OBJECT = SyntheticTask(size=48, objects=1, min_radius=4, max_radius=7)  # 4-class softmax
TWO_OBJECTS = SyntheticTask(size=48, objects=2, min_radius=4, max_radius=7)  # binary: a red square?
VIT_TASK = SyntheticTask(size=64, objects=1)  # 8 x 8 patches of 8 px (6 x 6 at 48 px is too coarse)
SIZE = ONE_OBJECT.size
SCENES = 8  # explained per model
NORMALISATION = ["--mean", str(MEAN), "--std", str(STD)]
PREPROCESSING = ["--input-size", str(SIZE), *NORMALISATION]
TOLERANCE = 2  # px a map's maximum may lie outside its object's box: half a layer1 cell
CNN_LAYER = ["--layer", "layer1"]


@dataclass(frozen=True)
class Trained:
    """A trained model (eval mode), its checkpoint file and its labels file."""

    model: nn.Module
    checkpoint: Path
    labels: Path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trained")


def trained(
    model: nn.Module,
    task: SyntheticTask,
    objective: Objective,
    steps: int,
    batch_size: int,
    lr: float,
    checkpoint: Path,
    labels: list[str],
) -> Trained:
    """Train ``model`` from scratch, then save it as a training script would: the state dict
    inside a dict with the epoch, and a labels file of one name per line."""
    training = train(model, task, steps, lr=lr, batch_size=batch_size, seed=0, objective=objective)
    assert training.accuracy >= 0.98, training
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "loss": training.loss}, checkpoint)
    names = checkpoint.with_suffix(".txt")
    names.write_text("".join(f"{name}\n" for name in labels), encoding="utf-8")
    return Trained(model, checkpoint, names)


@pytest.fixture(scope="module")
def resnet_classes(folder: Path, one_thread: None) -> Trained:
    """torchvision resnet18, 4 classes (softmax), one object per scene."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(CLASS_NAMES))
    return trained(
        model, ONE_OBJECT, SINGLE_LABEL, 60, 16, 3e-3, folder / "classes.pth", list(CLASS_NAMES)
    )


@pytest.fixture(scope="module")
def resnet_binary(folder: Path, one_thread: None) -> Trained:
    """torchvision resnet18 with one logit: a red square among two objects, or not."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1)
    names = ["no red square", "red square"]  # class 0 negative, class 1 positive
    return trained(model, TWO_OBJECTS, present(0), 40, 8, 2e-3, folder / "binary.pth", names)


@pytest.fixture(scope="module")
def vit_classes(folder: Path, one_thread: None) -> Trained:
    """synthetic.py's tiny torchvision VisionTransformer (8 px patches), 4 classes."""
    torch.manual_seed(0)
    model = build_vit(len(CLASS_NAMES), VIT_TASK.size)
    return trained(
        model, VIT_TASK, SINGLE_LABEL, 200, 16, 3e-3, folder / "vit.pth", list(CLASS_NAMES)
    )


def written(scenes: Scenes, folder: Path) -> list[Path]:
    """Each scene as a PNG ``scene0.png``... in ``folder``, as a user's images would be."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(len(scenes.pixels)):
        path = folder / f"scene{index}.png"
        assert cv2.imwrite(str(path), scenes.rgb8(index).numpy()[:, :, ::-1])  # RGB -> BGR
        paths.append(path)
    return paths


def as_read(scenes: Scenes) -> torch.Tensor:
    """The model's input (N, 3, S, S) from the PNGs: 8-bit pixels, normalised as the CLI does."""
    pixels = torch.stack([scenes.rgb8(i) for i in range(len(scenes.pixels))])  # (N, S, S, 3)
    return (pixels.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


@pytest.fixture(scope="module")
def one_object_scenes(folder: Path) -> Scenes:
    scenes = ONE_OBJECT.scenes(SCENES, seed=2024)
    written(scenes, folder / "one")
    return scenes


@pytest.fixture(scope="module")
def vit_scenes(folder: Path) -> Scenes:
    scenes = VIT_TASK.scenes(SCENES, seed=2024)
    written(scenes, folder / "vit")
    return scenes


@pytest.fixture(scope="module")
def two_object_scenes(folder: Path) -> Scenes:
    scenes = TWO_OBJECTS.scenes(SCENES, seed=2025)
    written(scenes, folder / "two")
    return scenes


def explain(images: Path, out: Path, *args: str | Path) -> dict[tuple[int, int], dict]:
    """``scorecam run images -o out --format jsonl ARGS``: (scene, class index) -> record."""
    done = cli("run", images, "-o", out, "--format", "jsonl", *args, timeout=300)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert errors(done.stderr) == []
    found = {}
    for line in done.stdout.decode("utf-8").splitlines():
        record = json.loads(line)
        scene = int(Path(record["input"]).stem.removeprefix("scene"))
        found[scene, record["class_index"]] = record
    return found


def peak_inside(npy: str, box: torch.Tensor, margin: float = 0) -> bool:
    """Whether the map's maximum (its first, row-major) lies in ``box`` (x0, y0, x1, y1; x1 and
    y1 exclusive) grown by ``margin`` pixels on each side. The .npy map has the image's size."""
    cam = np.load(npy)
    assert cam.ndim == 2 and np.isfinite(cam).all() and cam.max() > cam.min()
    y, x = np.unravel_index(int(cam.argmax()), cam.shape)
    x0, y0, x1, y1 = box.tolist()
    return bool(x0 - margin <= x < x1 + margin and y0 - margin <= y < y1 + margin)


def assert_each_points_at_its_object(records: dict[tuple[int, int], dict], scenes: Scenes) -> None:
    """One map per scene, for its object's class (the model's top-1 is right), named from the
    labels file; each map's maximum inside the object's box."""
    truth = scenes.labels[:, 0].tolist()
    assert sorted(records) == [(i, c) for i, c in enumerate(truth)], sorted(records)
    npys = [(records[i, c]["npy"], scenes.boxes[i, 0]) for i, c in enumerate(truth)]
    inside = [peak_inside(npy, box) for npy, box in npys]
    near = [peak_inside(npy, box, TOLERANCE) for npy, box in npys]
    print(f"pointing: {sum(inside)}/{len(npys)} inside the box, {sum(near)} within {TOLERANCE} px")
    assert all(near), near
    for i, c in enumerate(truth):
        assert records[i, c]["class_name"] == CLASS_NAMES[c]
        assert records[i, c]["probability"] > 0.5


# -- Issue 18: a checkpoint of a registry architecture, a labels file, no factory code ----------


@pytest.fixture(scope="module")
def resnet_records(
    resnet_classes: Trained, one_object_scenes: Scenes, folder: Path
) -> dict[tuple[int, int], dict]:
    """The 4-class checkpoint explained: ``--model resnet18 --weights CKPT --labels FILE``, every
    pass in PyTorch (``--backend torch``: the reference for the ONNX file's maps)."""
    args: list[str | Path] = ["--weights", resnet_classes.checkpoint, "--backend", "torch"]
    args += ["--labels", resnet_classes.labels]
    return explain(folder / "one", folder / "out-resnet", "--model", "resnet18", *args,
                   *PREPROCESSING, *CNN_LAYER)  # fmt: skip


def test_a_trained_resnet18_checkpoint_points_at_each_object(
    resnet_records: dict[tuple[int, int], dict], one_object_scenes: Scenes
) -> None:
    assert_each_points_at_its_object(resnet_records, one_object_scenes)
    assert {r["model"] for r in resnet_records.values()} == {"resnet18"}


def test_a_trained_one_logit_model_gives_both_classes_and_class_1_points_at_the_object(
    resnet_binary: Trained, two_object_scenes: Scenes, folder: Path
) -> None:
    args: list[str | Path] = [
        "--weights",
        resnet_binary.checkpoint,
        "--labels",
        resnet_binary.labels,
        "-k",
        "2",
    ]
    records = explain(folder / "two", folder / "out-binary", "--model", "resnet18", *args,
                      *PREPROCESSING, *CNN_LAYER)  # fmt: skip
    assert sorted(records) == [(i, c) for i in range(SCENES) for c in (0, 1)]
    with torch.inference_mode():
        logits = resnet_binary.model(as_read(two_object_scenes))[:, 0]  # (N,)
    positive = two_object_scenes.targets[:, 0].bool()
    assert 0 < int(positive.sum()) < SCENES  # both kinds of scene are explained
    hits = []
    for i in range(SCENES):
        negative, positive_record = records[i, 0], records[i, 1]
        assert negative["class_name"] == "no red square"
        assert positive_record["class_name"] == "red square"
        total = negative["probability"] + positive_record["probability"]
        assert total == pytest.approx(1.0, abs=1e-6)
        assert positive_record["probability"] == pytest.approx(
            float(torch.sigmoid(logits[i])), abs=1e-4
        )
        assert (positive_record["probability"] > 0.5) == bool(positive[i])  # decided right
        if positive[i]:  # class 1's map points at the red square, not at the other object
            (red,) = (two_object_scenes.labels[i] == 0).nonzero()[0].tolist()
            hits.append(peak_inside(positive_record["npy"], two_object_scenes.boxes[i, red]))
            other = two_object_scenes.boxes[i, 1 - red]
            assert not peak_inside(positive_record["npy"], other)
    print(f"binary pointing: {sum(hits)}/{len(hits)}")
    assert all(hits), hits


def test_a_trained_tiny_vit_points_at_each_object(
    vit_classes: Trained, vit_scenes: Scenes, folder: Path
) -> None:
    args: list[str | Path] = ["--weights", vit_classes.checkpoint, "--labels", vit_classes.labels]
    records = explain(folder / "vit", folder / "out-vit", "--model", "synthetic:vit64", *args,
                      "--input-size", str(VIT_TASK.size), *NORMALISATION)  # fmt: skip
    assert_each_points_at_its_object(records, vit_scenes)
    assert {r["layer"] for r in records.values()} == {"encoder.layers.encoder_layer_3.ln_1"}


# -- Issue 19: the trained model as an ONNX file, explained without the torch model -------------


@pytest.fixture(scope="module")
def resnet_onnx(resnet_classes: Trained, folder: Path, one_thread: None) -> Path:
    path = folder / "classes.onnx"
    export_onnx(resnet_classes.model, (SIZE, SIZE), path)
    return path


def layer1_tensor(path: Path) -> str:
    """The ONNX tensor of resnet18's ``layer1`` output: the last 64 x S/4 x S/4 map listed by
    ``scorecam layers`` (layer2 starts with a stride-2 convolution)."""
    done = cli("layers", path, timeout=120)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    rows = [line.split() for line in done.stdout.decode("utf-8").splitlines()]
    shape = f"64x{SIZE // 4}x{SIZE // 4}"
    names = [row[0] for row in rows if shape in "".join(row[1:])]
    assert names, rows
    return names[-1]


def test_the_trained_model_as_onnx_points_at_each_object_and_equals_torch(
    resnet_classes: Trained,
    resnet_onnx: Path,
    resnet_records: dict[tuple[int, int], dict],
    one_object_scenes: Scenes,
    folder: Path,
) -> None:
    tensor = layer1_tensor(resnet_onnx)
    args: list[str | Path] = ["--labels", resnet_classes.labels, "--layer", tensor, *PREPROCESSING]
    onnx_records = explain(folder / "one", folder / "out-onnx", "--model", resnet_onnx, *args)
    assert_each_points_at_its_object(onnx_records, one_object_scenes)
    torch_records = resnet_records
    assert sorted(onnx_records) == sorted(torch_records)
    for key, record in onnx_records.items():
        got, expected = np.load(record["npy"]).ravel(), np.load(torch_records[key]["npy"]).ravel()
        pearson = float(np.corrcoef(got, expected)[0, 1])
        assert pearson >= 0.999, (key, pearson)
        print(f"scene {key[0]}: Pearson {pearson:.6f} against torch")
        assert record["probability"] == pytest.approx(torch_records[key]["probability"], abs=1e-4)


# -- Issue 19: a trained model saved as a Hugging Face folder, explained from the folder alone ----


class Logits(nn.Module):
    """A Hugging Face classifier returning its logits tensor, for training."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).logits  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def hf_resnet_folder(folder: Path, one_thread: None) -> Path:
    """A Hugging Face ResNet (basic blocks) trained on the 4-class task, saved with
    ``save_pretrained`` with its class names (``id2label``) and an image processor holding the
    task's normalisation and size: the folder is all the CLI is given."""
    import transformers

    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
        layer_type="basic", id2label=dict(enumerate(CLASS_NAMES)),
    )  # fmt: skip
    model = transformers.ResNetForImageClassification(config)
    training = train(Logits(model), ONE_OBJECT, 60, lr=3e-3, batch_size=16, objective=SINGLE_LABEL)
    assert training.accuracy >= 0.98, training
    path = folder / "hf-resnet"
    model.save_pretrained(path)
    processor = transformers.ViTImageProcessor(
        image_mean=[MEAN] * 3, image_std=[STD] * 3, size={"height": SIZE, "width": SIZE}
    )
    processor.save_pretrained(path)
    return path


def test_a_trained_hf_folder_points_at_each_object(
    hf_resnet_folder: Path, one_object_scenes: Scenes, folder: Path
) -> None:
    # no --labels, --mean, --std or --input-size: the folder says them; its first stage is 12 x 12
    layer = "resnet.encoder.stages.0"
    records = explain(folder / "one", folder / "out-hf", "--model", hf_resnet_folder,
                      "--layer", layer)  # fmt: skip
    assert_each_points_at_its_object(records, one_object_scenes)
    assert {r["layer"] for r in records.values()} == {layer}
