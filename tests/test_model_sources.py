"""Model sources: custom factories called only when safe, outputs reduced to logits, one-line
errors for everything else, and the public names of scorecam_cli.models."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from scorecam_cli.cam import compute_cams
from scorecam_cli.cli import main
from scorecam_cli.errors import UnsupportedModel
from scorecam_cli.models import (  # noqa: F401  (the public names stay importable)
    EMBEDDED_MODEL,
    LoadedModel,
    Preprocessing,
    available_models,
    load_model,
    load_state_dict_file,
    parse_class,
    weights_cache_path,
)


@pytest.mark.parametrize(
    "name", ["tuple_output", "namedtuple_output", "dict_output", "object_output"]
)
def test_outputs_are_reduced_to_the_logits(name, tiny_images):
    loaded = load_model(f"badmodels:{name}", "none")
    logits = loaded.module(tiny_images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 10)
    torch.testing.assert_close(logits, loaded.module.net(tiny_images))
    result = compute_cams(loaded.module, "net.relu", tiny_images)
    assert result.maps.shape == (3, 1, 16, 16)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("dict_without_logits", "without a logits tensor"),
        ("three_d_output", "shape (1, 3, 10)"),
    ],
)
def test_outputs_without_logits_fail_at_the_dry_run(name, message):
    result = CliRunner().invoke(main, ["layers", f"badmodels:{name}", "--input-size", "32"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    with pytest.raises(UnsupportedModel):
        load_model(f"badmodels:{name}", "none").module(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("badmodels:raises", "failed: cannot build this model"),
        ("badmodels:needs_arguments", "needs arguments"),
        ("badmodels:not_a_module", "not a torch nn.Module"),
        ("badmodels:imported_helper", "not a function or class defined in badmodels"),
        ("badmodels:Outputs", "not a torch nn.Module"),
        ("os:system", "not a function or class defined in os"),
        ("os:fork", "not a function or class defined in os"),
        ("builtins:exit", "not a function or class defined in builtins"),
    ],
)
def test_unsafe_or_failing_factories_are_one_line(spec, message):
    result = CliRunner().invoke(main, ["layers", spec])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_a_module_class_is_called_without_arguments():
    loaded = load_model("badmodels:ModelClass", "none")
    assert loaded.module(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_native_sizes_come_from_the_model_and_its_weights():
    assert load_model("inception_v3", "none").preprocessing.input_size == (299, 299)
    assert load_model("vit_b_16", "none").preprocessing.input_size == (224, 224)
    assert load_model("maxvit_t", "none").preprocessing.input_size == (224, 224)
    assert load_model("efficientnet_b3", "none").preprocessing.input_size == (300, 300)
