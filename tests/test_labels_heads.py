"""Your own model's names, normalisation and head: --labels, --mean/--std, --head (binary
one-logit and multi-label sigmoid models, checked against the float64 reference), grayscale
models (seeded, small)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ownmodels import SmallNet
from reference import reference_scorecam
from test_cam import assert_maps_close
from test_cli import write_image
from torch import nn

from scorecam_cli.cam import CamConfig, compute_cams, upsample_maps
from scorecam_cli.cli import main
from scorecam_cli.errors import BadLabels, BadRequest
from scorecam_cli.explainer import build_explainer
from scorecam_cli.faithfulness import explained_probabilities
from scorecam_cli.images import find_inputs
from scorecam_cli.models import load_model
from scorecam_cli.models.labels import read_labels
from scorecam_cli.spec import ComputeSpec, ExplainSpec, ModelSpec
from scorecam_cli.stages import decoded_batches
from scorecam_cli.writing import DecodeOptions

IMAGES = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(3))
NAMES = ["cat", "dog", "tabby cat", "fox", "owl"]


def run(tmp_path: Path, *args: str, image: Path | None = None):
    image = image or write_image(tmp_path / "x.png")
    base = ["run", str(image), "-o", str(tmp_path / "out"), "--format", "jsonl", "--workers", "0"]
    return CliRunner().invoke(main, [*base, "--input-size", "48", "--backend", "torch", *args])


def records(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- --labels --------------------------------------------------------------------------------


def label_files(folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    text = folder / "names.txt"
    text.write_text("\ufeff" + "\n".join(NAMES) + "\n\n", encoding="utf-8")  # BOM, blank tail
    listed = folder / "names.json"
    listed.write_text(json.dumps(NAMES))
    indexed = folder / "indexed.json"
    indexed.write_text(json.dumps({str(i): n for i, n in reversed(list(enumerate(NAMES)))}))
    return [text, listed, indexed]


def test_labels_in_three_formats(tmp_path):
    for path in label_files(tmp_path):
        assert read_labels(str(path)) == NAMES, path


@pytest.mark.parametrize("form", [0, 1, 2])
def test_labels_name_records_and_classes(tmp_path, form):
    labels = label_files(tmp_path / "labels")[form]
    made = records(
        run(tmp_path, "--model", "ownmodels:multilabel", "--labels", str(labels), "-k", "5")
    )
    assert sorted(r["class_name"] for r in made) == sorted(NAMES)
    assert all(NAMES[r["class_index"]] == r["class_name"] for r in made)
    chosen = records(
        run(
            tmp_path,
            "--model",
            "ownmodels:multilabel",
            "--labels",
            str(labels),
            "--class",
            "Tabby Cat",
            "--overwrite",
        )
    )
    assert [(r["class_index"], r["class_name"]) for r in chosen] == [(2, "tabby cat")]
    manifest = [
        json.loads(line) for line in (tmp_path / "out/manifest.jsonl").read_text().splitlines()
    ]
    assert manifest[-1]["class_name"] == "tabby cat"
    assert manifest[-1]["options"]["labels"] == str(labels)


def test_an_unknown_name_lists_close_matches(tmp_path):
    labels = label_files(tmp_path / "labels")[0]
    result = run(tmp_path, "--model", "ownmodels:multilabel", "--labels", str(labels), "-c", "dgo")
    assert result.exit_code == 2 and "closest: dog" in result.stderr


def test_a_count_mismatch_is_refused_in_one_line(tmp_path):
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    result = run(tmp_path, "--model", "ownmodels:multilabel", "--labels", str(labels))
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if "Error" in line]
    assert lines == [f"Error: --labels {labels}: 3 names, but the model has 5 outputs"]
    assert not (tmp_path / "out").exists()
    binary = run(tmp_path, "--model", "ownmodels:binary", "--labels", str(labels))
    assert binary.exit_code == 2 and "has 2 classes (a one-logit binary model" in binary.stderr


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("bad.json", "[1, 2", "not valid JSON"),
        ("gap.json", '{"0": "a", "2": "c"}', "the indices skip 1"),
        ("num.json", '["a", 3]', "the name of class 1 is a int"),
        ("key.json", '{"x": "a"}', "key 'x' is no class index"),
        ("scalar.json", '"a"', "a JSON str"),
        ("empty.txt", "\n\n", "holds no class names"),
        ("hole.txt", "a\n\nc\n", "the name of class 1 is empty"),
        ("ctrl.txt", "a\x07b\n", "not printable"),
    ],
)
def test_bad_labels_files_are_one_line(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(BadLabels, match=reason) as caught:
        read_labels(str(path))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_labels_files_are_read_as_untrusted(tmp_path, monkeypatch):
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(BadLabels, match="not UTF-8"):
        read_labels(str(tmp_path / "latin1.txt"))
    with pytest.raises(BadLabels, match="not a regular file"):
        read_labels(str(tmp_path))
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)  # never opened for a blocking read
    with pytest.raises(BadLabels, match="not a regular file"):
        read_labels(str(fifo))
    with pytest.raises(BadLabels, match="cannot read"):
        read_labels(str(tmp_path / "missing.txt"))
    monkeypatch.setattr("scorecam_cli.models.labels.MAX_BYTES", 10)
    (tmp_path / "big.txt").write_text("a\n" * 20)
    with pytest.raises(BadLabels, match="over"):
        read_labels(str(tmp_path / "big.txt"))


def test_eval_takes_a_class_by_its_label(tmp_path):
    labels = tmp_path / "binary.txt"
    labels.write_text("normal\ndefect\n")
    image = write_image(tmp_path / "x.png")
    args = ["eval", str(image), "--model", "ownmodels:binary", "--labels", str(labels),
            "--class", "normal", "--input-size", "48", "--steps", "2", "--format", "jsonl",
            "--backend", "torch", "--workers", "0"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["images"] == 1


# -- --mean / --std ----------------------------------------------------------------------------


def fed_input(model: str, image: Path, **overrides: object) -> torch.Tensor:
    """What the model is fed for ``image``: the logits of a model returning its channel means."""
    compute = ComputeSpec("cpu", "torch")
    spec = ExplainSpec(ModelSpec(model, **overrides), input_size=(32, 32), compute=compute)
    explainer = build_explainer(spec)
    (_, _, batch), *_ = decoded_batches(explainer, find_inputs([str(image)]), DecodeOptions(1, 0))
    return explainer.logits(batch)[0].double()  # (C,)


def flat_image(path: Path, bgr: tuple[int, int, int]) -> Path:
    assert cv2.imwrite(str(path), np.full((20, 30, 3), bgr, dtype=np.uint8))
    return path


def test_mean_and_std_change_the_input_exactly_as_asked(tmp_path):
    image = flat_image(tmp_path / "flat.png", (50, 100, 200))  # RGB (200, 100, 50)
    rgb = torch.tensor([200, 100, 50], dtype=torch.float64) / 255
    default = fed_input("ownmodels:channel_means", image)
    imagenet = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)
    torch.testing.assert_close(default, (rgb - imagenet) / std, rtol=0, atol=1e-6)
    mean, spread = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    asked = fed_input("ownmodels:channel_means", image, mean=mean, std=spread)
    expected = (rgb - torch.tensor(mean, dtype=torch.float64)) / torch.tensor(spread).double()
    torch.testing.assert_close(asked, expected, rtol=0, atol=1e-6)
    one = fed_input("ownmodels:channel_means", image, mean=(0.5,), std=(0.5,))
    torch.testing.assert_close(one, (rgb - 0.5) / 0.5, rtol=0, atol=1e-6)


def test_a_grayscale_model_gets_one_value_and_gray_pixels(tmp_path):
    image = flat_image(tmp_path / "flat.png", (50, 100, 200))
    gray = float(cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2GRAY)[0, 0]) / 255
    fed = fed_input("ownmodels:gray_means", image, mean=(0.25,), std=(0.5,))
    torch.testing.assert_close(fed, torch.tensor([(gray - 0.25) / 0.5]).double(), rtol=0, atol=1e-6)
    default = fed_input("ownmodels:gray_means", image)  # ImageNet's mean and std, averaged
    torch.testing.assert_close(
        default, torch.tensor([(gray - 0.449) / 0.226]).double(), rtol=0, atol=1e-6
    )
    with pytest.raises(BadRequest, match="--mean has 3 values; the model takes 1 input channel"):
        fed_input("ownmodels:gray_means", image, mean=(0.1, 0.2, 0.3))


def test_mean_and_std_on_the_command_line_reach_the_manifest(tmp_path):
    args = ["--model", "ownmodels:multilabel", "--mean", "0.1,0.2,0.3", "--std", "0.5"]
    assert records(run(tmp_path, *args))
    entry = json.loads((tmp_path / "out/manifest.jsonl").read_text().splitlines()[0])
    assert entry["options"]["mean"] == [0.1, 0.2, 0.3]
    assert entry["options"]["std"] == [0.5, 0.5, 0.5]
    assert entry["options"]["head"] == "softmax"
    for bad in (["--mean", "1,2"], ["--std", "0,1,1"], ["--mean", "nan"], ["--std", "x"]):
        refused = run(tmp_path, "--model", "ownmodels:multilabel", *bad)
        assert refused.exit_code == 2 and bad[0] in refused.stderr, bad


# -- heads -----------------------------------------------------------------------------------


def test_binary_head_probabilities_are_the_sigmoid_and_its_complement():
    model = SmallNet(1).eval()
    result = compute_cams(model, "relu", IMAGES, top_k=2)
    z = model(IMAGES).detach()[:, 0]  # (N,)
    positive = (z > 0).long()
    assert torch.equal(result.classes[:, 0], positive)  # the likelier class first
    assert torch.equal(result.classes[:, 1], 1 - positive)
    expected = torch.stack([torch.sigmoid(z), 1 - torch.sigmoid(z)], dim=1)  # classes 1, 0
    got = result.probabilities.gather(1, (1 - result.classes))  # columns back to classes 1, 0
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(result.probabilities, torch.ones(3, 2))  # the softmax-of-one bug
    torch.testing.assert_close(result.logits[:, 0], z.abs(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weighting", ["prob", "softmax"])
@pytest.mark.parametrize("target", [0, 1])
def test_binary_maps_match_the_float64_reference(weighting, target):
    model = SmallNet(1).eval()
    config = CamConfig(weighting=weighting, batch_size=5)
    result = compute_cams(model, "relu", IMAGES, classes=[target], config=config)
    for n in range(3):
        expected = reference_scorecam(model, "relu", IMAGES[n], target, weighting, head="sigmoid")
        assert_maps_close(result.maps[n, 0], expected)


class OneChannel(nn.Module):
    """A one-logit model whose target layer ``relu`` has one channel: its map is w * A."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, 1, 5, stride=4, padding=2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))  # (N, 1)


@pytest.mark.parametrize("target", [0, 1])
def test_prob_weights_are_the_sigmoid_of_each_masked_logit(target):
    model = OneChannel().eval()
    image = IMAGES[:1]
    config = CamConfig(weighting="prob")
    cam = compute_cams(model, "relu", image, classes=[target], config=config).maps[0, 0]
    with torch.no_grad():
        acts = model.relu(model.conv(image)).double()  # (1, 1, 12, 12)
        mask = upsample_maps(acts, (48, 48)).double()
        mask = (mask - mask.min()) / (mask.max() - mask.min())
        z = model.double()(image.double() * mask)[0, 0]  # the masked input's logit
    expected = torch.sigmoid(z) if target == 1 else 1 - torch.sigmoid(z)
    lit = acts[0, 0] > 0
    assert int(lit.sum()) > 10 and 0.01 < float(expected) < 0.99
    weights = cam.double()[lit] / acts[0, 0][lit]  # w at every pixel where A > 0
    torch.testing.assert_close(weights, expected.expand_as(weights), rtol=1e-5, atol=1e-7)


def test_multilabel_probabilities_are_per_label_sigmoids():
    model = SmallNet(5, seed=1).eval()
    config = CamConfig(head="sigmoid", weighting="prob")
    result = compute_cams(model, "relu", IMAGES, top_k=3, config=config)
    logits = model(IMAGES).detach()
    assert torch.equal(result.classes, logits.topk(3, dim=1).indices)  # ranked by logit
    torch.testing.assert_close(
        result.probabilities, torch.sigmoid(logits.gather(1, result.classes)), rtol=1e-6, atol=1e-6
    )
    assert float(result.probabilities.sum(dim=1).max()) > 1.0  # labels do not compete
    for n in range(3):
        for t in range(3):
            target = int(result.classes[n, t])
            expected = reference_scorecam(model, "relu", IMAGES[n], target, "prob", head="sigmoid")
            assert_maps_close(result.maps[n, t], expected)


def test_softmax_on_one_output_is_refused():
    with pytest.raises(BadRequest, match="--head softmax: the model has one output"):
        compute_cams(SmallNet(1).eval(), "relu", IMAGES, config=CamConfig(head="softmax"))


def test_gradient_methods_follow_the_head():
    model = SmallNet(1).eval()
    config = CamConfig(method="gradcam")
    negative = compute_cams(model, "relu", IMAGES, classes=[0], config=config)
    positive = compute_cams(model, "relu", IMAGES, classes=[1], config=config)
    z = model(IMAGES).detach()[:, 0]
    torch.testing.assert_close(negative.probabilities[:, 0], 1 - torch.sigmoid(z))
    assert not torch.allclose(negative.maps, positive.maps)


def test_faithfulness_probabilities_follow_the_head():
    model = SmallNet(1).eval()
    saliency = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    original, _ = explained_probabilities(model, IMAGES, saliency, torch.zeros(3))
    z = model(IMAGES).detach()[:, 0]
    torch.testing.assert_close(original, 1 - torch.sigmoid(z))
    multi = SmallNet(5, seed=1).eval()
    picked, _ = explained_probabilities(multi, IMAGES, saliency, torch.ones(3), head="sigmoid")
    torch.testing.assert_close(picked, torch.sigmoid(multi(IMAGES).detach()[:, 1]))


def test_binary_model_on_the_command_line(tmp_path):
    labels = tmp_path / "binary.txt"
    labels.write_text("normal\ndefect\n")
    both = records(run(tmp_path, "--model", "ownmodels:binary", "--labels", str(labels), "-k", "2"))
    assert sorted(r["class_index"] for r in both) == [0, 1]
    probabilities = {r["class_name"]: r["probability"] for r in both}
    assert probabilities["normal"] + probabilities["defect"] == pytest.approx(1.0, abs=2e-6)
    assert 0 < probabilities["defect"] < 1
    one = records(
        run(
            tmp_path,
            "--model",
            "ownmodels:binary",
            "--class",
            "0",
            "--weighting",
            "prob",
            "--overwrite",
        )
    )
    assert [r["class_index"] for r in one] == [0]
    assert one[0]["probability"] == pytest.approx(probabilities["normal"], abs=1e-6)
    entry = json.loads((tmp_path / "out/manifest.jsonl").read_text().splitlines()[-1])
    assert entry["options"]["head"] == "sigmoid" and entry["options"]["weighting"] == "prob"
    refused = run(tmp_path, "--model", "ownmodels:binary", "--head", "softmax")
    assert refused.exit_code == 2 and "--head softmax" in refused.stderr


# -- grayscale -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_one_channel_model_runs_on_colour_and_gray_inputs(tmp_path, backend):
    colour = write_image(tmp_path / "in/colour.png", 40, 56, channels=3)
    gray = write_image(tmp_path / "in/gray.png", 30, 20, channels=1)
    loaded = load_model("ownmodels:gray", "none")
    assert loaded.preprocessing.channels == 1
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--format", "jsonl",
            "--model", "ownmodels:gray", "--input-size", "48", "--workers", "0",
            "--backend", backend]  # fmt: skip
    result = CliRunner().invoke(main, args)
    made = records(result)
    assert sorted(Path(r["input"]).name for r in made) == ["colour.png", "gray.png"]
    assert "masked passes run in PyTorch" not in result.stderr  # the export took 1 channel
    for record, size in zip(
        sorted(made, key=lambda r: r["input"]), [(40, 56), (30, 20)], strict=True
    ):
        overlay = cv2.imread(record["overlay"], cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (*size, 3)  # drawn on the original picture
        assert np.load(record["npy"]).shape == size
    assert gray.exists() and colour.exists()
