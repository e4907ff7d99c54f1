"""Faithfulness metrics on hand-computable models, and the cascading-randomisation sanity check."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TinyNet
from scipy import stats
from torch import nn
from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

from scorecam_cli.cam import CamConfig, compute_cams
from scorecam_cli.faithfulness import (
    average_drop,
    cam_explainer,
    deletion_curve,
    explained_probabilities,
    explanation_masks,
    faithfulness,
    faithfulness_scores,
    gaussian_blur,
    increase_in_confidence,
    insertion_curve,
    removal_fractions,
    summarise,
)
from scorecam_cli.sanity import merge_sanity, randomisation_order, sanity_check, spearman

pytestmark = pytest.mark.usefixtures("one_thread")


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class RegionMean(nn.Module):
    """Two classes; logit 0 = mean of x over all channels of columns [0, 2), logit 1 = 0.

    So p(0 | x) = sigmoid(mean of the region), computable by hand for any mask.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, :, :, :2].mean(dim=(1, 2, 3))  # (N,)
        return torch.stack([region, torch.zeros_like(region)], dim=1)


class RetainedFraction(nn.Module):
    """p(0 | x) = mean of channel 0, exactly (logits log m, log(1 - m)): for an all-ones image
    with removed pixels set to 0, that is the fraction of pixels retained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, 0].mean(dim=(1, 2)).clamp(0, 1)  # (N,)
        return torch.stack([m.log(), (1 - m).log()], dim=1)


class Template(nn.Module):
    """Logit 0 = 4 * (match of channel 0 with a +-1 checkerboard in the top-left 8x8 - 1).

    The image below matches it (logit 4); blurring or zeroing the region destroys the match.
    """

    def __init__(self) -> None:
        super().__init__()
        rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
        self.register_buffer("pattern", ((rows + cols) % 2 * 2 - 1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        match = (x[:, 0, :8, :8] * self.pattern).mean(dim=(1, 2))  # (N,)
        return torch.stack([4 * (match - 1), torch.zeros_like(match)], dim=1)


def template_case() -> tuple[Template, torch.Tensor, torch.Tensor]:
    """The model, an image (1, 3, 16, 16) that matches it, and a map ranking its region first."""
    model = Template().eval()
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(1, 3, 16, 16, generator=gen)
    image[0, 0, :8, :8] = 2 * model.pattern
    good = torch.rand(1, 16, 16, generator=gen) * 0.5
    good[0, :8, :8] += 1
    return model, image, good


# -- Average Drop and Increase in Confidence ------------------------------------------------------


def test_average_drop_and_increase_from_given_probabilities():
    original = torch.tensor([0.8, 0.5, 0.2, 0.0])
    explained = torch.tensor([0.4, 0.5, 0.3, 0.0])
    assert average_drop(original, explained).tolist() == [50.0, 0.0, 0.0, 0.0]
    assert increase_in_confidence(original, explained).tolist() == [0.0, 0.0, 100.0, 0.0]


def test_explanation_masks_are_min_max_normalised():
    saliency = torch.tensor([[[2.0, 4.0], [6.0, 10.0]], [[3.0, 3.0], [3.0, 3.0]]])
    expected = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(explanation_masks(saliency), expected)


def test_average_drop_and_increase_by_hand():
    model = RegionMean().eval()
    images = torch.full((4, 3, 4, 4), 2.0)
    images[2] = -2.0
    column = torch.arange(4.0).expand(4, 4)  # value = column index
    saliency = torch.stack([column, 3 - column, column, torch.ones(4, 4)])  # (4, 4, 4)
    # E = column / 3, (3 - column) / 3, column / 3, 0; the region is columns 0 and 1.
    y = [sigmoid(2), sigmoid(2), sigmoid(-2), sigmoid(2)]
    o = [sigmoid(2 * (0 + 1 / 3) / 2), sigmoid(2 * (1 + 2 / 3) / 2), sigmoid(-1 / 3), 0.5]
    original, explained = explained_probabilities(model, images, saliency, [0, 0, 0, 0])
    torch.testing.assert_close(original, torch.tensor(y), rtol=0, atol=1e-6)
    torch.testing.assert_close(explained, torch.tensor(o), rtol=0, atol=1e-6)

    drops = [100 * max(0.0, a - b) / a for a, b in zip(y, o, strict=True)]
    result = faithfulness(model, images, saliency, [0, 0, 0, 0], steps=4, blur_kernel=3)
    assert result.images == 4
    assert result.average_drop == pytest.approx(sum(drops) / 4, abs=1e-4)
    assert result.increase_in_confidence == pytest.approx(25.0)  # only image 2: O > Y


# -- Deletion and insertion -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 10])  # 10 x 10 = 100 pixels: 4 per step, done at step 25
def test_deletion_auc_of_a_linear_model_is_one_half(size):
    model = RetainedFraction().eval()
    images = torch.ones(2, 3, size, size)
    saliency = torch.rand(2, size, size, generator=torch.Generator().manual_seed(0))
    curve = deletion_curve(model, images, saliency, [0, 0], steps=32)
    assert curve.probabilities.shape == (2, 33)
    torch.testing.assert_close(curve.probabilities, 1 - curve.fractions.expand(2, -1))
    torch.testing.assert_close(curve.auc(), torch.full((2,), 0.5), rtol=0, atol=1e-6)


def test_removal_fractions():
    expected = torch.tensor([0, 0.25, 0.5, 0.75, 1.0])
    torch.testing.assert_close(removal_fractions(64, 4), expected)
    fractions = removal_fractions(10, 4)  # 3 pixels per step
    torch.testing.assert_close(fractions, torch.tensor([0, 0.3, 0.6, 0.9, 1.0]))


def test_important_pixels_first_beat_the_reversed_order():
    model, image, good = template_case()
    deletion_good = deletion_curve(model, image, good, [0]).auc()
    deletion_bad = deletion_curve(model, image, -good, [0]).auc()
    insertion_good = insertion_curve(model, image, good, [0]).auc()
    insertion_bad = insertion_curve(model, image, -good, [0]).auc()
    assert float(deletion_good) < 0.3 < 0.6 < float(deletion_bad)
    assert float(insertion_good) > 0.6 > 0.3 > float(insertion_bad)


def reference_curve(model, images, saliency, classes, steps, start):
    """Slow, loop-by-loop deletion (start None) or insertion curve."""
    n, _, h, w = images.shape
    pixels = h * w
    per_step = math.ceil(pixels / steps)
    rows = []
    for i in range(n):
        values = saliency[i].flatten().tolist()
        order = sorted(range(pixels), key=lambda p: -values[p])  # stable: ties by index
        row = []
        for k in range(steps + 1):
            changed = torch.zeros(pixels, dtype=torch.bool)
            changed[order[: min(k * per_step, pixels)]] = True
            changed = changed.view(h, w)
            if start is None:
                image = torch.where(changed, torch.zeros(()), images[i])
            else:
                image = torch.where(changed, images[i], start[i])
            with torch.no_grad():
                row.append(float(model(image[None]).softmax(dim=1)[0, classes[i]]))
        rows.append(row)
    return torch.tensor(rows)


def test_curves_match_a_slow_reference(tiny_net, tiny_images):
    saliency = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(5))
    saliency[:, :20, :20] = 0.5  # ties
    classes = [1, 4, 9]
    blurred = tv_gaussian_blur(tiny_images, [11, 11], [5.0, 5.0])
    for start, curve in [
        (None, deletion_curve(tiny_net, tiny_images, saliency, classes, steps=8)),
        (blurred, insertion_curve(tiny_net, tiny_images, saliency, classes, steps=8)),
    ]:
        expected = reference_curve(tiny_net, tiny_images, saliency, classes, 8, start)
        torch.testing.assert_close(curve.probabilities, expected, rtol=1e-4, atol=1e-6)


def test_gaussian_blur_matches_torchvision(tiny_images):
    torch.testing.assert_close(
        gaussian_blur(tiny_images, 11, 5.0), tv_gaussian_blur(tiny_images, [11, 11], [5.0, 5.0])
    )


def test_chunk_size_does_not_change_results(tiny_net, tiny_images):
    saliency = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    one = faithfulness_scores(tiny_net, tiny_images, saliency, [0, 3, 5], steps=8, batch_size=1)
    big = faithfulness_scores(tiny_net, tiny_images, saliency, [0, 3, 5], steps=8, batch_size=999)
    torch.testing.assert_close(one.original, big.original)
    torch.testing.assert_close(one.explained, big.explained)
    torch.testing.assert_close(one.deletion.probabilities, big.deletion.probabilities)
    torch.testing.assert_close(one.insertion.probabilities, big.insertion.probabilities)


def test_summarise_over_batches_equals_one_batch(tiny_net, tiny_images):
    saliency = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    classes = torch.tensor([2, 2, 7])
    whole = faithfulness(tiny_net, tiny_images, saliency, classes, steps=8)
    parts = [
        faithfulness_scores(tiny_net, tiny_images[s], saliency[s], classes[s], steps=8)
        for s in (slice(0, 1), slice(1, 3))
    ]
    streamed = summarise(parts)
    assert streamed.images == whole.images == 3
    for field in ("average_drop", "increase_in_confidence", "deletion_auc", "insertion_auc"):
        assert getattr(streamed, field) == pytest.approx(getattr(whole, field), abs=1e-5)
    # Y is also step 0 of deletion and the last step of insertion.
    torch.testing.assert_close(parts[1].deletion.probabilities[:, 0], parts[1].original)
    torch.testing.assert_close(parts[1].insertion.probabilities[:, -1], parts[1].original)


def test_bad_inputs_are_value_errors(tiny_net, tiny_images):
    with pytest.raises(ValueError, match="do not fit"):
        deletion_curve(tiny_net, tiny_images, torch.rand(3, 32, 32), [0, 0, 0])
    with pytest.raises(ValueError, match="target classes"):
        deletion_curve(tiny_net, tiny_images, torch.rand(3, 64, 64), [0, 0])
    with pytest.raises(ValueError, match="steps"):
        deletion_curve(tiny_net, tiny_images, torch.rand(3, 64, 64), [0, 0, 0], steps=0)
    with pytest.raises(ValueError, match="no images"):
        summarise([])


# -- Spearman and the sanity check ----------------------------------------------------------------


def test_spearman():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert spearman(x, x.pow(3) + 7).tolist() == pytest.approx([1.0])
    assert spearman(x, -x).tolist() == pytest.approx([-1.0])
    assert spearman(x, torch.ones(1, 4)).tolist() == [0.0]
    ties = torch.tensor([[1.0, 2.0, 2.0, 3.0]])  # ranks 1, 2.5, 2.5, 4
    assert spearman(ties, x).tolist() == pytest.approx([4.5 / math.sqrt(4.5 * 5)])


def test_spearman_matches_scipy():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 6, 7), generator=gen).float()  # many ties
    b = torch.randn(3, 6, 7, generator=gen)
    expected = [stats.spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(3)]
    assert spearman(a, b).tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_cascading_randomisation_changes_the_maps(tiny_net, tiny_images, method):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    rng = torch.get_rng_state()
    classes = compute_cams(tiny_net, "relu", tiny_images).classes[:, 0]
    explain = cam_explainer("relu", classes, CamConfig(method=method))
    steps = sanity_check(tiny_net, tiny_images, explain, seed=0)
    assert [(s.module, s.randomised, s.total) for s in steps] == [
        ("fc", 1, 3),
        ("conv2", 2, 3),
        ("conv1", 3, 3),
    ]
    assert all(s.correlations.shape == (3,) for s in steps)
    assert steps[-1].correlation < 0.5
    after = tiny_net.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rng)
    # The same seed gives the same randomised models, so batches can be merged.
    again = sanity_check(tiny_net, tiny_images, explain, seed=0)
    assert all(
        torch.equal(a.correlations, b.correlations) for a, b in zip(steps, again, strict=True)
    )
    merged = merge_sanity([steps, again])
    assert merged[-1].correlations.shape == (6,)
    assert merged[-1].correlation == pytest.approx(steps[-1].correlation)


def test_explain_never_sees_the_callers_model(tiny_net, tiny_images):
    seen = []

    def explain(model, images):
        seen.append(model)
        return images.mean(dim=1) * model.fc.weight.sum()

    sanity_check(tiny_net, tiny_images, explain)
    assert len(seen) == 4  # original maps + 3 steps
    assert all(model is not tiny_net for model in seen)


def test_max_steps_spreads_the_checks_and_ends_fully_random():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.BatchNorm2d(4, affine=False),
        *[nn.Conv2d(4, 4, 1) for _ in range(10)],
    ).eval()
    model[1].running_mean.fill_(3.0)
    images = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert randomisation_order(model, (5, 5)) == [str(i) for i in range(11, -1, -1)]
    stats = []

    def explain(m, x):
        stats.append(m[1].running_mean.clone())
        return m(x)[:, 0]

    steps = sanity_check(model, images, explain, max_steps=4)
    assert [(s.module, s.randomised) for s in steps] == [("11", 1), ("7", 5), ("4", 8), ("0", 12)]
    assert torch.equal(stats[-2], torch.full((4,), 3.0))  # BatchNorm not yet reached at step 8
    assert torch.equal(stats[-1], torch.zeros(4))  # its running statistics reset at the end
    assert float(model[1].running_mean[0]) == 3.0
    assert len(sanity_check(model, images, explain, max_steps=None)) == 12
    with pytest.raises(ValueError, match="max steps"):
        sanity_check(model, images, explain, max_steps=0)


def test_tiny_net_fixture_is_the_conftest_one(tiny_net):
    assert isinstance(tiny_net, TinyNet)
