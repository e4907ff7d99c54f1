"""Model folders (issue 19): Hugging Face ``save_pretrained`` folders and timm ``save_for_hf``
folders, built in the test from small configs with random weights.

Each folder's class names, preprocessing and layer layout must come from the folder; the maps
must equal the float64 reference after the layout transform; the image fed to the model must
equal what the folder's own image processor makes of the same image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import transformers
from hostile import cli, errors, one_error_naming, records
from reference import reference_scorecam
from timm.models import save_for_hf
from torch import nn

from scorecam_cli.explainer import Explainer, build_explainer
from scorecam_cli.images import preprocess
from scorecam_cli.models.sources import FOLDER, HF_FOLDER, TIMM, TIMM_FOLDER, parse_source
from scorecam_cli.spec import CamConfig, ComputeSpec, ExplainSpec, LayerSpec, ModelSpec

NAMES = {0: "heron", 1: "otter", 2: "lynx"}
MEAN, STD = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]  # not ImageNet's


def save_hf(folder: Path, model: nn.Module, processor: object | None) -> Path:
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build().eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("folders")


@pytest.fixture(scope="module")
def hf_vit(folders: Path) -> Path:
    """A 2-layer ViT, 40 x 48 input (8 px patches: a 5 x 6 grid), one class token."""
    config = transformers.ViTConfig(
        image_size=(40, 48), patch_size=8, hidden_size=24, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=48, id2label=NAMES,
    )  # fmt: skip
    model = seeded(lambda: transformers.ViTForImageClassification(config))
    size = {"height": 40, "width": 48}
    processor = transformers.ViTImageProcessor(image_mean=MEAN, image_std=STD, size=size)
    return save_hf(folders / "vit", model, processor)


@pytest.fixture(scope="module")
def hf_swin(folders: Path) -> Path:
    """A 3-stage Swin at 64 px: token sequences without prefix, 16 x 16 -> 8 x 8 -> 4 x 4."""
    config = transformers.SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 2, 2],
        window_size=4, id2label=NAMES,
    )  # fmt: skip
    model = seeded(lambda: transformers.SwinForImageClassification(config))
    size = {"height": 64, "width": 64}
    processor = transformers.ViTImageProcessor(image_mean=MEAN, image_std=STD, size=size)
    return save_hf(folders / "swin", model, processor)


@pytest.fixture(scope="module")
def hf_convnext(folders: Path) -> Path:
    """A 4-stage ConvNeXt whose blocks run channels-last; its processor gives
    ``{shortest_edge}`` with ``crop_pct``, as ConvNeXt's do."""
    config = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        image_size=64,
        id2label=NAMES,
        layer_scale_init_value=1.0,  # blocks that matter (the default 1e-6 makes them no-ops)
    )
    model = seeded(lambda: transformers.ConvNextForImageClassification(config))
    processor = transformers.ConvNextImageProcessor(
        size={"shortest_edge": 64}, crop_pct=0.875, image_mean=MEAN, image_std=STD
    )
    return save_hf(folders / "convnext", model, processor)


def image_batch(size: tuple[int, int], count: int = 2) -> tuple[list[np.ndarray], torch.Tensor]:
    """Seeded RGB images at ``size`` and their (N, 3, H, W) batch as the tool preprocesses it
    (for the folder's MEAN and STD)."""
    rng = np.random.default_rng(7)
    rgb = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]
    batch = torch.stack([torch.from_numpy(preprocess(im, size, MEAN, STD)) for im in rgb])
    return rgb, batch


def torch_explainer(folder: Path | str, layer: str | None = None, **method: object) -> Explainer:
    spec = ExplainSpec(
        ModelSpec(str(folder)),
        LayerSpec(layer),
        CamConfig(batch_size=16, **method),  # type: ignore[arg-type]
        ComputeSpec(device="cpu", backend="torch"),
    )
    return build_explainer(spec)


def assert_maps_equal_the_reference(explainer: Explainer, batch: torch.Tensor) -> None:
    result = explainer.explain(batch)
    module = explainer.model.torch_module()
    layout = explainer.layer.layout
    assert layout is not None
    for n in range(len(batch)):
        target = int(result.classes[n, 0])
        expected = reference_scorecam(
            module, explainer.layer.name, batch[n], target, view=layout.to_nchw,
            weighting=explainer.config.weighting, head=explainer.config.head,
        )  # fmt: skip
        torch.testing.assert_close(result.maps[n, 0].double(), expected, rtol=1e-4, atol=1e-6)


def test_model_texts_that_are_paths_name_folders(tmp_path: Path, monkeypatch) -> None:
    assert parse_source("./my-vit").kind == FOLDER
    assert parse_source("runs/vit").kind == FOLDER
    assert parse_source("hf:my-vit").kind == HF_FOLDER
    assert parse_source("timm:./exported").kind == TIMM_FOLDER
    assert parse_source("timm:resnet50").kind == TIMM  # a timm name stays one
    assert parse_source("resnet50").kind == "torchvision"
    assert parse_source("tinymodels:tiny").kind == "module"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet50").mkdir()  # a plain folder does not hide the architecture
    assert parse_source("resnet50").kind == "torchvision"
    (tmp_path / "resnet50" / "config.json").write_text("{}")
    assert parse_source("resnet50").kind == FOLDER


def test_a_hf_vit_folder_gives_names_preprocessing_tokens_and_exact_maps(hf_vit: Path) -> None:
    explainer = torch_explainer(hf_vit)
    loaded = explainer.model
    assert loaded.categories == ["heron", "otter", "lynx"]
    assert loaded.preprocessing.input_size == (40, 48) == explainer.size
    assert loaded.preprocessing.mean == pytest.approx(MEAN)
    assert loaded.preprocessing.std == pytest.approx(STD)
    # the default by the README's ViT rule: the last layer's first norm, 1 class token, 5 x 6 grid
    assert explainer.layer.name == "vit.layers.1.layernorm_before"
    assert explainer.layer.layout is not None
    assert (explainer.layer.layout.prefix, explainer.layer.layout.grid) == (1, (5, 6))
    rgb, batch = image_batch((40, 48))
    # What the model is fed is what the folder's own processor makes of the same image.
    processor = transformers.AutoImageProcessor.from_pretrained(str(hf_vit))
    expected = processor(images=rgb, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch, expected.float(), rtol=1e-5, atol=1e-5)
    assert_maps_equal_the_reference(explainer, batch)


def test_a_hf_vit_through_the_compiled_backend_equals_torch(hf_vit: Path) -> None:
    _, batch = image_batch((40, 48))
    torch_maps = torch_explainer(hf_vit).explain(batch).maps
    spec = ExplainSpec(ModelSpec(str(hf_vit)), compute=ComputeSpec(device="cpu", backend="auto"))
    auto = build_explainer(spec).explain(batch)
    for got, expected in zip(auto.maps.flatten(1), torch_maps.flatten(1), strict=True):
        assert float(torch.corrcoef(torch.stack([got, expected]))[0, 1]) >= 0.9999


def test_a_hf_swin_folder_reads_prefix_free_tokens_of_every_stage(hf_swin: Path) -> None:
    explainer = torch_explainer(hf_swin)
    assert explainer.model.preprocessing.mean == pytest.approx(MEAN)
    # mean-pooled tokens: the default is the last map before pooling, the final norm (4 x 4)
    assert explainer.layer.name == "swin.layernorm"
    assert explainer.layer.layout is not None
    assert (explainer.layer.layout.prefix, explainer.layer.layout.grid) == (0, (4, 4))
    _, batch = image_batch((64, 64))
    assert_maps_equal_the_reference(explainer, batch)
    stage = torch_explainer(hf_swin, "swin.encoder.layers.0.blocks.0.layernorm_after")
    assert stage.layer.layout is not None and stage.layer.layout.grid == (16, 16)
    assert_maps_equal_the_reference(stage, batch[:1])


def test_a_hf_convnext_folder_reads_its_channels_last_blocks(hf_convnext: Path) -> None:
    explainer = torch_explainer(hf_convnext, "convnext.encoder.stages.2.layers.0.pwconv2")
    prep = explainer.model.preprocessing
    assert prep.input_size == (64, 64)  # {shortest_edge: 64}: the model takes 64 x 64
    assert (prep.mean, prep.std) == (pytest.approx(MEAN), pytest.approx(STD))
    assert str(explainer.layer.layout) == "nhwc"
    _, batch = image_batch((64, 64))
    assert_maps_equal_the_reference(explainer, batch)
    default = torch_explainer(hf_convnext)
    assert default.layer.name == "convnext.encoder.stages.3"
    assert str(default.layer.layout) == "nchw"


def test_a_multi_label_hf_folder_gets_the_sigmoid_head(folders: Path) -> None:
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, id2label=NAMES, problem_type="multi_label_classification",
    )  # fmt: skip
    model = seeded(lambda: transformers.ViTForImageClassification(config))
    processor = transformers.ViTImageProcessor(image_mean=MEAN, image_std=STD, size=32)  # int
    folder = save_hf(folders / "multi", model, processor)
    explainer = torch_explainer(folder, weighting="prob")
    assert explainer.config.head == "sigmoid"
    assert explainer.size == (32, 32)
    _, batch = image_batch((32, 32))
    result = explainer.explain(batch)
    with torch.no_grad():
        logits = explainer.logits(batch)
    chosen = logits.gather(1, result.classes)
    torch.testing.assert_close(result.probabilities, chosen.sigmoid())
    assert_maps_equal_the_reference(explainer, batch)
    assert torch_explainer(folder, head="softmax").config.head == "softmax"  # --head overrides


def test_hf_deit_and_beit_folders_count_their_prefix_tokens(folders: Path) -> None:
    small = {"image_size": 32, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 32, "id2label": NAMES}  # fmt: skip
    deit = seeded(
        lambda: transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**small))
    )
    beit = seeded(lambda: transformers.BeitForImageClassification(transformers.BeitConfig(**small)))
    deit_explainer = torch_explainer(save_hf(folders / "deit", deit, None))
    assert deit_explainer.layer.layout is not None
    assert deit_explainer.layer.layout.prefix == 2  # class and distillation tokens
    assert deit_explainer.layer.name == "deit.layers.1.layernorm_before"
    beit_explainer = torch_explainer(save_hf(folders / "beit", beit, None))
    assert beit_explainer.layer.layout is not None and beit_explainer.layer.layout.prefix == 1
    assert beit_explainer.layer.name == "beit.layers.1"  # mean pooling: the last block's output
    rng = np.random.default_rng(3)
    batch = torch.from_numpy(rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert_maps_equal_the_reference(deit_explainer, batch)


def test_a_timm_folder_gives_label_names_and_its_input_size(folders: Path) -> None:
    def build() -> nn.Module:
        return timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=(48, 64),
            patch_size=8, depth=2,
        )  # fmt: skip

    model = seeded(build)
    folder = folders / "timm-vit"
    args = {"img_size": [48, 64], "patch_size": 8, "depth": 2}
    save_for_hf(model, str(folder), model_config={"label_names": list(NAMES.values())},
                model_args=args)  # fmt: skip
    for text in (str(folder), f"timm:{folder}"):
        explainer = torch_explainer(text)
        assert explainer.model.categories == ["heron", "otter", "lynx"]
        assert explainer.size == (48, 64)
        assert explainer.model.preprocessing.mean == pytest.approx((0.5, 0.5, 0.5))
        assert explainer.layer.name == "blocks.1.norm1"
        assert explainer.layer.layout is not None and explainer.layer.layout.grid == (6, 8)
    rng = np.random.default_rng(5)
    batch = torch.from_numpy(rng.standard_normal((1, 3, 48, 64)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(explainer.logits(batch), model(batch))  # the folder's weights
    assert_maps_equal_the_reference(explainer, batch)
    from scorecam_cli.errors import UnknownModel
    from scorecam_cli.models import load_model

    with pytest.raises(UnknownModel, match=r"a timm folder.*timm:DIR"):
        load_model(f"hf:{folder}")  # said to be Hugging Face's: the hint names the right form


# -- through the CLI: records, and folders that must be refused in one line ---------------------


def test_a_hf_folder_through_the_cli_names_its_classes(hf_vit: Path, tmp_path: Path) -> None:
    from hostile import images

    images(tmp_path / "in", 2)
    out = tmp_path / "out"
    done = cli("run", tmp_path / "in", "-o", out, "--model", hf_vit, "--format", "jsonl",
               "--backend", "torch", timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    lines = records(done.stdout)
    assert len(lines) == 2
    import json

    for line in lines:
        record = json.loads(line)
        assert record["class_name"] in NAMES.values()
        assert record["layer"] == "vit.layers.1.layernorm_before"
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text()
    assert str(hf_vit) in manifest


@pytest.fixture(scope="module")
def broken(folders: Path, hf_vit: Path) -> dict[str, Path]:
    """Folders that must each be refused in one line naming the folder or its file."""
    import shutil

    cases: dict[str, Path] = {}

    def copy(name: str) -> Path:
        target = folders / f"broken-{name}"
        shutil.copytree(hf_vit, target)
        cases[name] = target
        return target

    (copy("no-weights") / "model.safetensors").unlink()
    pickled = copy("pickle")
    (pickled / "model.safetensors").unlink()
    torch.save({"weights": Path("not a tensor")}, pickled / "pytorch_model.bin")  # a Python object
    (copy("not-json") / "config.json").write_text("{ not json")
    remote = copy("remote-code")
    (remote / "config.json").write_text(
        '{"model_type": "my-own", "auto_map": {"AutoConfig": "code.MyConfig"}}'
    )
    headless = folders / "broken-headless"  # a base model saved without its classifier
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)  # fmt: skip
    transformers.ViTModel(config).save_pretrained(headless)
    cases["headless"] = headless
    return cases


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no-weights", ["weights"]),
        ("pickle", ["weights"]),
        ("not-json", ["config.json", "JSON"]),
        ("remote-code", ["config.json"]),
        ("headless", ["classifier"]),
    ],
)
def test_a_broken_folder_is_one_line_and_exit_2(
    broken: dict[str, Path], case: str, words: list[str], tmp_path: Path
) -> None:
    from hostile import images

    images(tmp_path / "in", 1)
    done = cli("run", tmp_path / "in", "-o", tmp_path / "out", "--model", broken[case], timeout=120)
    assert done.returncode == 2, done.stderr.decode()
    one_error_naming(done.stderr, str(broken[case]), *words)
    assert not records(done.stdout)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.png"))


def test_a_folder_that_is_no_model_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    done = cli("layers", f"{tmp_path / 'photos'}/", timeout=60)
    assert done.returncode == 2
    assert errors(done.stderr) and "config.json" in errors(done.stderr)[0]


def test_a_timm_folder_that_does_not_fit_is_refused_naming_it(folders: Path) -> None:
    from scorecam_cli.errors import CheckpointMismatch, UnknownModel
    from scorecam_cli.models import load_model

    model = seeded(lambda: timm.create_model("resnet18", pretrained=False, num_classes=3))
    folder = folders / "timm-wrong"
    save_for_hf(model, str(folder))
    other = seeded(lambda: timm.create_model("resnet18", pretrained=False, num_classes=5))
    torch.save(other.state_dict(), folder / "pytorch_model.bin")  # 5 classes in a 3-class folder
    (folder / "model.safetensors").unlink(missing_ok=True)
    with pytest.raises(CheckpointMismatch, match=r"fc\.weight.*\(5, 512\)"):
        load_model(str(folder))
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"resnet18"', '"resnet_eighteen"'))
    with pytest.raises(UnknownModel, match=r"resnet_eighteen.*no timm model"):
        load_model(f"timm:{folder}")
