"""ONNX files explained as they are, in ONNX Runtime, without their torch model: the graph's
tensors listed with the layouts the graph decides, the default by the torch rule, maps equal to
the torch model's at the same layer (Pearson >= 0.9999, identical pass counts), gradient methods
refused, and every bad file refused in one line (exit 2, no traceback).

Every file is exported here, from seeded models (tests/conftest.py's TinyNet, a tiny torchvision
ViT and Swin, and small CNNs below), with scorecam's own exporter (dynamo, dynamic batch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import TinyNet
from hostile import cli, images
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from scorecam_cli.backends.export import export_onnx
from scorecam_cli.cam import CamConfig, CamResult, compute_cams
from scorecam_cli.cli import main
from scorecam_cli.explainer import Explainer, build_explainer
from scorecam_cli.layers import resolve_layer
from scorecam_cli.models import load_model
from scorecam_cli.spec import ComputeSpec, ExplainSpec, LayerSpec, ModelSpec

SIZE = (64, 64)


class NHWCInput(nn.Module):
    """``net`` fed channels-last images (N, H, W, 3): the exported graph's input is NHWC."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))  # (N, H, W, 3) -> (N, 3, H, W)


class ChannelsLastNet(nn.Module):
    """A conv stem, then channels-last maps (ConvNeXt's inner layout): LayerNorm, Linear and the
    ReLU ``act`` (the default: the map before the mean over h and w), then the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Linear(8, 12)
        self.act = nn.ReLU()
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)  # (N, h, w, 8)
        x = self.act(self.mlp(self.norm(x)))  # (N, h, w, 12)
        return self.fc(x.mean(dim=(1, 2)))


class Excite(nn.Module):
    """Squeeze-and-excitation: a global pooling inside the backbone, which is no head."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.down = nn.Conv2d(channels, 4, 1)
        self.up = nn.Conv2d(4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.up(torch.relu(self.down(self.pool(x)))))


class SqueezeSE(nn.Module):
    """Features with an SE block, then SqueezeNet's head: a 1x1 convolution to the 10 classes,
    ReLU and the global pooling. The default is ``features`` (the class maps are the head)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), Excite(16), nn.ReLU())
        self.classifier = nn.Sequential(
            nn.Conv2d(16, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def seeded(model: nn.Module) -> nn.Module:
    """``model`` with seeded weights, norms included (at their init, a LayerNorm's output has
    zero mean over the channels, and equal channel weights give an all-zero map)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


def tiny_vit() -> nn.Module:
    return seeded(
        VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
            num_classes=10,
        )
    )  # fmt: skip


def tiny_swin() -> nn.Module:
    return seeded(
        SwinTransformer(
            patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
            window_size=[4, 4], num_classes=10,
        )
    )  # fmt: skip


MODELS = {
    "tiny": (lambda: TinyNet().eval(), SIZE, {}),
    "vit": (tiny_vit, (32, 32), {}),
    "swin": (tiny_swin, SIZE, {}),
    "nhwc": (lambda: NHWCInput(TinyNet()).eval(), SIZE, {"nhwc": True}),
    "dynamic": (lambda: TinyNet().eval(), SIZE, {"dynamic_size": True}),
    "channels_last": (lambda: seeded(ChannelsLastNet()), SIZE, {}),
    "squeeze": (lambda: seeded(SqueezeSE()), SIZE, {}),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every model of MODELS exported once: name -> its .onnx file (in a folder of its own)."""
    files = {}
    for name, (build, size, options) in MODELS.items():
        folder = tmp_path_factory.mktemp(name)
        files[name] = folder / f"{name}.onnx"
        export_onnx(build(), size, files[name], **options)
    return files


def explainer_of(path: Path | str, layer: str | None = None, **spec: object) -> Explainer:
    model = ModelSpec(str(path))
    compute = ComputeSpec(device="cpu", threads=1)
    return build_explainer(ExplainSpec(model, LayerSpec(layer), compute=compute, **spec))  # type: ignore[arg-type]


def batch(count: int, size: tuple[int, int] = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, *size, generator=torch.Generator().manual_seed(seed))


def torch_cams(
    model: nn.Module, layer: str | None, images: torch.Tensor, classes: torch.Tensor
) -> CamResult:
    """The torch model's Score-CAM at ``layer`` (None: its default), with its layout."""
    info = resolve_layer(model, layer, (int(images.shape[2]), int(images.shape[3])))
    return compute_cams(model, info.ref, images, classes)


def assert_same_cams(got: CamResult, expected: CamResult) -> None:
    """Same classes and pass counts; each map correlates with the torch one at >= 0.9999."""
    assert torch.equal(got.classes, expected.classes)
    assert got.maps.shape == expected.maps.shape
    assert got.forward_passes == expected.forward_passes
    assert got.forward_passes_saved == expected.forward_passes_saved
    assert torch.equal(got.image_passes, expected.image_passes)
    for first, second in zip(got.maps.flatten(0, 1), expected.maps.flatten(0, 1), strict=True):
        assert float(second.std()) > 0  # a map worth comparing
        pairs = torch.stack([first.flatten().double(), second.flatten().double()])
        assert float(torch.corrcoef(pairs)[0, 1]) >= 0.9999


def layer_lines(*args: str) -> list[list[str]]:
    result = CliRunner().invoke(main, ["layers", *args])
    assert result.exit_code == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def default_of(lines: list[list[str]]) -> list[str]:
    (default,) = [line for line in lines if line[-1] == "default"]
    return default


def refused(*args: str) -> str:
    """The one stderr line of a command refused with exit 2 (no traceback)."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# -- Layers and the default -----------------------------------------------------------------------


def test_a_cnn_file_lists_its_maps_and_the_default_by_the_torch_rule(exported):
    lines = layer_lines(str(exported["tiny"]))
    assert [line[1:3] for line in lines] == [["12x16x16", "nchw"]] * 2 + [["16x16x16", "nchw"]] * 2
    assert default_of(lines)[0] == "relu_1"  # the input of the mean that feeds the head
    assert "relu" in [line[0] for line in lines]


def test_a_vit_file_reads_tokens_and_defaults_to_the_last_blocks_first_norm(exported):
    lines = layer_lines(str(exported["vit"]))
    default = default_of(lines)
    assert default[1:3] == ["16x4x4", "tokens+1"]
    assert {line[2] for line in lines} == {"tokens+1", "nchw"}  # the patch embedding is nchw
    explainer = explainer_of(exported["vit"])
    assert str(explainer.layer) == default[0]
    images, classes = batch(2, (32, 32)), torch.tensor([[1], [6]])
    expected = torch_cams(tiny_vit(), None, images, classes)  # encoder_layer_1.ln_1
    assert_same_cams(explainer.explain(images, classes=classes), expected)


def test_channels_last_maps_inside_the_graph_are_nhwc(exported):
    lines = layer_lines(str(exported["channels_last"]))
    layouts = {line[0]: line[2] for line in lines}
    default = default_of(lines)
    assert default[1:3] == ["12x16x16", "nhwc"]
    assert sorted(set(layouts.values())) == ["nchw", "nhwc"]
    model = seeded(ChannelsLastNet())
    images, classes = batch(2), torch.tensor([[0], [5]])
    got = explainer_of(exported["channels_last"]).explain(images, classes=classes)
    assert_same_cams(got, torch_cams(model, "act", images, classes))


def test_a_swin_file_defaults_to_its_final_norm_read_from_nhwc(exported):
    lines = layer_lines(str(exported["swin"]))
    assert default_of(lines)[1:3] == ["32x8x8", "nhwc"]  # after the patch merging's slices
    assert {line[2] for line in lines} == {"nchw", "nhwc"}
    images, classes = batch(2), torch.tensor([[3], [6]])
    got = explainer_of(exported["swin"]).explain(images, classes=classes)
    assert_same_cams(got, torch_cams(tiny_swin(), None, images, classes))  # norm


def test_the_default_skips_inner_pooling_and_the_classifier_convolution(exported):
    default = default_of(layer_lines(str(exported["squeeze"])))
    assert default[1:3] == ["16x16x16", "nchw"]  # not the 10 class maps, nor the SE's pool
    images, classes = batch(2), torch.tensor([[2], [9]])
    got = explainer_of(exported["squeeze"]).explain(images, classes=classes)
    assert_same_cams(got, torch_cams(seeded(SqueezeSE()), None, images, classes))  # features


# -- Maps equal the torch model's -----------------------------------------------------------------


@pytest.mark.parametrize(("tensor", "module"), [(None, "head_act"), ("relu", "relu")])
def test_cnn_maps_equal_torch_at_the_same_layer(exported, tensor, module):
    explainer = explainer_of(exported["tiny"], tensor)
    images, classes = batch(3), torch.tensor([[3], [7], [0]])
    got = explainer.explain(images, classes=classes)
    assert_same_cams(got, torch_cams(TinyNet().eval(), module, images, classes))
    if module == "relu":  # 4 dead channels share the zero mask, channel 5 is twice channel 4
        assert got.forward_passes_saved > 0


def test_an_nhwc_input_is_fed_transposed(exported):
    explainer = explainer_of(exported["nhwc"])
    assert explainer.model.module.input_layout == "nhwc"  # type: ignore[union-attr]
    images, classes = batch(2), torch.tensor([[4], [8]])
    got = explainer.explain(images, classes=classes)
    assert_same_cams(got, torch_cams(TinyNet().eval(), "head_act", images, classes))


def test_a_dynamic_size_needs_input_size(exported):
    line = refused("layers", str(exported["dynamic"]))
    assert "any input size" in line and "--input-size" in line
    lines = layer_lines(str(exported["dynamic"]), "--input-size", "48x80")
    assert default_of(lines)[:2] == ["relu_1", "16x12x20"]
    explainer = explainer_of(exported["dynamic"], input_size=(48, 80))
    images, classes = batch(2, (48, 80)), torch.tensor([[1], [2]])
    got = explainer.explain(images, classes=classes)
    assert_same_cams(got, torch_cams(TinyNet().eval(), "head_act", images, classes))
    line = refused("layers", str(exported["tiny"]), "--input-size", "96")
    assert "takes 64x64 images, not 96x96" in line


def test_the_masked_passes_batch_and_share_as_for_torch_models(exported):
    explainer = explainer_of(exported["tiny"], "relu")
    assert explainer.config.batch_size == 8  # ONNX Runtime's default batch on the CPU
    images = batch(2)
    unshared = explainer.explain(images, config=CamConfig(batch_size=3, share_masks=False))
    shared = explainer.explain(images)
    assert shared.forward_passes < unshared.forward_passes
    torch.testing.assert_close(shared.maps, unshared.maps)


def test_faithfulness_runs_on_the_file_as_on_the_torch_model(exported, tmp_path):
    (image,) = images(tmp_path, 1, 64, 64)
    common = ["--steps", "4", "--format", "jsonl", "--device", "cpu", "--workers", "0"]
    runner = CliRunner()
    onnx_run = runner.invoke(main, ["eval", str(image), "-m", str(exported["tiny"]), *common])
    torch_args = ["--input-size", "64", "--layer", "head_act", "--backend", "torch"]
    torch_run = runner.invoke(
        main, ["eval", str(image), "-m", "tinymodels:tiny", *torch_args, *common, "--method",
               "scorecam"],
    )  # fmt: skip
    assert onnx_run.exit_code == 0 and torch_run.exit_code == 0, onnx_run.stderr
    (got,), (expected,) = [[json.loads(r.stdout)] for r in (onnx_run, torch_run)]
    assert got["method"] == "scorecam"  # the default for an ONNX file: no gradcam
    for key in ("average_drop_percent", "deletion_auc", "insertion_auc"):
        assert got[key] == pytest.approx(expected[key], abs=1e-3)


# -- The CLI: records, labels, refusals -----------------------------------------------------------


def with_labels(source: Path, folder: Path, labels: object) -> Path:
    model = onnx.load(str(source))
    model.metadata_props.add(key="labels", value=json.dumps(labels))
    path = folder / "labelled.onnx"
    onnx.save(model, str(path))
    return path


def test_a_run_names_the_model_by_path_and_reads_its_labels(exported, tmp_path):
    names = [f"class {n}" for n in range(10)]
    path = with_labels(exported["tiny"], tmp_path, names)
    (image,) = images(tmp_path / "in", 1, 40, 50)
    out = tmp_path / "out"
    done = cli("run", image, "--model", path, "-o", out, "--format", "jsonl", "--class", "class 3")
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["model"] == str(path) and record["layer"] == "relu_1"
    assert record["class_name"] == "class 3" and record["forward_passes"] == 16
    (entry,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert entry["model"] == str(path)
    assert "normalised with ImageNet's mean and std" in done.stderr.decode()


def test_bad_labels_are_one_warning_and_no_names(exported, tmp_path):
    path = with_labels(exported["tiny"], tmp_path, ["only", "three", "names"])
    result = CliRunner().invoke(main, ["layers", str(path)])
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "labels" in warnings[0]
    assert load_model(str(path)).categories is None


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--method", "gradcam"], ["gradcam needs a PyTorch model"]),
        (["--method", "layercam"], ["layercam needs a PyTorch model"]),
        (["--precision", "bf16"], ["--precision bf16 is PyTorch autocast"]),
        (["--backend", "torch"], ["--backend torch is for PyTorch models"]),
        (["--weights", "none"], []),  # accepted: the listing's own value
        (["--weights", "x.pth"], ["holds its own weights"]),
        (["--layer", "relu_7"], ["no tensor named 'relu_7'", "closest: relu_1"]),
    ],
)
def test_what_an_onnx_file_cannot_do_is_refused(exported, tmp_path, args, words):
    (image,) = images(tmp_path, 1)
    command = ["run", str(image), "-m", str(exported["tiny"]), "-o", str(tmp_path / "o"), *args]
    if not words:
        assert CliRunner().invoke(main, command).exit_code == 0
        return
    line = refused(*command)
    assert all(word in line for word in words), line


@pytest.mark.parametrize(
    ("args", "word"), [(["--method", "gradcam"], "gradcam"), (["--sanity"], "--sanity")]
)
def test_eval_refuses_what_needs_a_torch_model(exported, tmp_path, args, word):
    (image,) = images(tmp_path, 1)
    line = refused("eval", str(image), "-m", f"onnx:{exported['tiny']}", *args)
    assert f"{word} needs a PyTorch model" in line


# -- Untrusted files ------------------------------------------------------------------------------


def with_external_data(source: Path, folder: Path, location: str) -> Path:
    """A copy of ``source`` whose largest initializer claims its data lies at ``location``."""
    model = onnx.load(str(source))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "3600")):
        tensor.external_data.add(key=key, value=value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def bad_file(kind: str, folder: Path, exported: dict[str, Path]) -> Path:
    """A file of ``kind`` that must be refused, made in ``folder``."""
    path = folder / f"{kind}.onnx"
    if kind == "png":
        (image,) = images(folder, 1)
        path.write_bytes(image.read_bytes())
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "too_large":
        with path.open("wb") as handle:  # sparse: nothing is written
            handle.truncate(2**31 + 1)
    elif kind == "outside":
        (folder / "weights.bin").write_bytes(bytes(4096))
        return with_external_data(exported["tiny"], folder / "model", "../weights.bin")
    elif kind == "absolute":
        return with_external_data(exported["tiny"], folder / "model", str(folder / "w.bin"))
    elif kind == "symlink":
        (folder / "weights.bin").write_bytes(bytes(4096))
        (folder / "model").mkdir()
        (folder / "model" / "w.bin").symlink_to(folder / "weights.bin")
        return with_external_data(exported["tiny"], folder / "model", "w.bin")
    elif kind == "short":
        (folder / "model").mkdir()
        (folder / "model" / "w.bin").write_bytes(bytes(100))
        return with_external_data(exported["tiny"], folder / "model", "w.bin")
    elif kind == "no_logits":  # the graph's output is its last map, (N, 16, 16, 16)
        model = onnx.load(str(exported["tiny"]))
        (maps,) = [value for value in model.graph.value_info if value.name == "relu_1"]
        model.graph.output.pop()
        model.graph.output.append(maps)
        onnx.save(model, str(path))
    elif kind == "two_inputs":
        model = onnx.load(str(exported["tiny"]))
        model.graph.input.append(onnx.helper.make_tensor_value_info("extra", 1, [1]))
        onnx.save(model, str(path))
    elif kind == "uint8_input":
        model = onnx.load(str(exported["tiny"]))
        model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
        onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", ["no such ONNX file"]),
        ("png", ["not an ONNX model"]),
        ("text", ["not an ONNX model"]),
        ("empty", ["the file is empty"]),
        ("folder", ["is a folder"]),
        ("fifo", ["not a regular file"]),
        ("too_large", ["too large for one ONNX file", "external data"]),
        ("outside", ["'../weights.bin'", "outside the model's folder"]),
        ("absolute", ["outside the model's folder"]),
        ("symlink", ["'w.bin'", "outside the model's folder"]),
        ("short", ["too short"]),
        ("no_logits", ["no output of shape (N, classes)"]),
        ("two_inputs", ["takes 2 inputs"]),
        ("uint8_input", ["no float image batch"]),
    ],
)
def test_bad_files_are_refused_in_one_line(exported, tmp_path, kind, words):
    path = bad_file(kind, tmp_path, exported)
    for command in (["layers", str(path)], ["run", "x.png", "-m", str(path), "-o", str(tmp_path)]):
        line = refused(*command)
        assert str(path.name) in line and all(word in line for word in words), line


def test_a_fixed_batch_is_listed_but_not_run(exported, tmp_path):
    model = onnx.load(str(exported["tiny"]))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "batch1.onnx"
    onnx.save(model, str(path))
    assert default_of(layer_lines(str(path)))[0] == "relu_1"
    (image,) = images(tmp_path, 1)
    line = refused("run", str(image), "-m", str(path), "-o", str(tmp_path / "out"))
    assert path.name in line and "fixed batch of 1" in line and "dynamic batch" in line


def test_external_data_beside_the_file_is_read(exported, tmp_path):
    model = onnx.load(str(exported["tiny"]))
    folder = tmp_path / "external"
    folder.mkdir()
    path = folder / "tiny.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="tiny.data", size_threshold=0)
    assert (folder / "tiny.data").stat().st_size > 0
    images_ = batch(2)
    got = explainer_of(path).explain(images_)
    expected = explainer_of(exported["tiny"]).explain(images_)
    torch.testing.assert_close(got.maps, expected.maps)


def test_layout_says_how_to_read_a_tensor(exported):
    vit = exported["vit"]
    default = default_of(layer_lines(str(vit)))[0]
    spec = ExplainSpec(
        ModelSpec(str(vit)), LayerSpec(default, "tokens", 1), compute=ComputeSpec(device="cpu")
    )
    assert str(build_explainer(spec).layer.layout) == "tokens+1"
    tiny = str(exported["tiny"])
    line = refused("run", "x.png", "-m", tiny, "--layer", "relu", "--layout", "nhwc")
    assert "tensor 'relu' has shape (1, 12, 16, 16), which is no nhwc map" in line


def test_the_help_names_the_path_forms():
    for command in (["models", "--help"], ["run", "--help"]):
        text = " ".join(CliRunner().invoke(main, command).stdout.split())
        assert "FILE.onnx" in text and "onnx:FILE" in text
