"""The Score-CAM core against the slow float64 reference, and its variants."""

from __future__ import annotations

import pytest
import torch
from reference import reference_scorecam

from scorecam_cli.cam import CamConfig, compute_cams, upsample_maps
from scorecam_cli.choices import METHODS


def assert_maps_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert scale > 0, "the reference map is blank: the test would prove nothing"
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("weighting", ["softmax", "prob"])
@pytest.mark.parametrize("batch_size", [1, 3, 17])  # 17 = K + 5
def test_matches_reference_for_each_image_and_target(tiny_net, tiny_images, weighting, batch_size):
    targets = torch.tensor([[2], [7], [0]])  # a different class for each image
    config = CamConfig(weighting=weighting, batch_size=batch_size)
    result = compute_cams(tiny_net, "relu", tiny_images, classes=targets, config=config)
    assert result.maps.shape == (3, 1, 16, 16)
    for n in range(3):
        expected = reference_scorecam(
            tiny_net, "relu", tiny_images[n], int(targets[n, 0]), weighting
        )
        assert_maps_close(result.maps[n, 0], expected)


def test_single_image_matches_reference(tiny_net, tiny_images):
    result = compute_cams(tiny_net, "relu", tiny_images[:1])
    target = int(result.classes[0, 0])
    assert target == int(tiny_net(tiny_images[:1]).argmax())
    assert_maps_close(
        result.maps[0, 0], reference_scorecam(tiny_net, "relu", tiny_images[0], target)
    )


def test_sharing_is_exact_and_saves_passes(tiny_net, tiny_images):
    shared = compute_cams(tiny_net, "relu", tiny_images, top_k=2)
    unshared = compute_cams(
        tiny_net, "relu", tiny_images, top_k=2, config=CamConfig(share_masks=False)
    )
    torch.testing.assert_close(shared.maps, unshared.maps, rtol=1e-5, atol=1e-6)
    # 4 dead channels per image share one zero pass for the batch; channel 5 reuses channel 4.
    assert unshared.forward_passes == 3 * 8 + 1
    assert shared.forward_passes == 3 * 7 + 1
    assert shared.forward_passes + shared.forward_passes_saved == 3 * 12


def test_no_sharing_still_runs_each_channel(tiny_net, tiny_images):
    result = compute_cams(tiny_net, "relu", tiny_images, config=CamConfig(share_masks=False))
    assert result.forward_passes + result.forward_passes_saved == 3 * 12


def test_top_k_equals_separate_single_class_runs(tiny_net, tiny_images):
    together = compute_cams(tiny_net, "relu", tiny_images, top_k=3)
    assert together.classes.shape == (3, 3)
    for t in range(3):
        alone = compute_cams(tiny_net, "relu", tiny_images, classes=together.classes[:, t : t + 1])
        torch.testing.assert_close(together.maps[:, t], alone.maps[:, 0], rtol=1e-5, atol=1e-6)
        assert alone.forward_passes == together.forward_passes  # k classes cost one run


def test_probabilities_and_logits_describe_targets(tiny_net, tiny_images):
    result = compute_cams(tiny_net, "relu", tiny_images, classes=[1, 4])
    logits = tiny_net(tiny_images)
    torch.testing.assert_close(result.logits, logits[:, [1, 4]].detach())
    torch.testing.assert_close(result.probabilities, logits.softmax(1)[:, [1, 4]].detach())


def test_faster_scorecam_with_all_channels_is_exact(tiny_net, tiny_images):
    exact = compute_cams(tiny_net, "relu", tiny_images)
    faster = compute_cams(
        tiny_net, "relu", tiny_images, config=CamConfig(method="faster-scorecam", top_channels=12)
    )
    torch.testing.assert_close(faster.maps, exact.maps)


def test_faster_scorecam_runs_fewer_passes(tiny_net, tiny_images):
    faster = compute_cams(
        tiny_net, "relu", tiny_images, config=CamConfig(method="faster-scorecam", top_channels=3)
    )
    assert faster.forward_passes <= 3 * 3
    assert faster.maps.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_finite_nonblank_maps(tiny_net, tiny_images, method):
    config = CamConfig(method=method, samples=2)
    result = compute_cams(tiny_net, "conv2", tiny_images, config=config)
    assert result.maps.shape == (3, 1, 16, 16)
    assert torch.isfinite(result.maps).all()
    assert (result.maps.flatten(1).amax(1) > 0).all()


def test_gradcam_matches_hand_computed(tiny_net, tiny_images):
    x = tiny_images[:1]
    store = {}
    handle = tiny_net.conv2.register_forward_hook(lambda _m, _i, o: store.update(a=o))
    logits = tiny_net(x)
    handle.remove()
    target = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, target], store["a"])
    expected = (grad.mean(dim=(2, 3))[:, :, None, None] * store["a"]).sum(1).relu()[0]
    result = compute_cams(tiny_net, "conv2", x, config=CamConfig(method="gradcam"))
    torch.testing.assert_close(result.maps[0, 0], expected.detach())


def test_iscam_with_one_step_is_scorecam(tiny_net, tiny_images):
    exact = compute_cams(tiny_net, "relu", tiny_images)
    integrated = compute_cams(
        tiny_net, "relu", tiny_images, config=CamConfig(method="iscam", samples=1)
    )
    torch.testing.assert_close(integrated.maps, exact.maps)


def test_sscam_is_repeatable_with_a_seed(tiny_net, tiny_images):
    config = CamConfig(method="sscam", samples=2, seed=3)
    first = compute_cams(tiny_net, "relu", tiny_images, config=config)
    second = compute_cams(tiny_net, "relu", tiny_images, config=config)
    torch.testing.assert_close(first.maps, second.maps)


def test_no_hooks_left_behind(tiny_net, tiny_images):
    compute_cams(tiny_net, "relu", tiny_images)
    compute_cams(tiny_net, "conv2", tiny_images, config=CamConfig(method="gradcam++"))
    assert all(not m._forward_hooks for m in tiny_net.modules())


def test_module_called_twice_resolves_the_chosen_call(tiny_images):
    from conftest import TinyNet

    class Twice(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.conv1(x))  # call 0: (N, 12, 16, 16)
            x = self.relu(self.conv2(x))  # call 1: (N, 16, 16, 16)
            return self.fc(self.pool(x).flatten(1))

    net = Twice().eval().to(tiny_images.device)
    first = compute_cams(net, "relu:0", tiny_images[:1])
    last = compute_cams(net, "relu", tiny_images[:1])
    second = compute_cams(net, "relu:1", tiny_images[:1])
    assert first.forward_passes + first.forward_passes_saved == 12
    assert second.forward_passes + second.forward_passes_saved == 16
    torch.testing.assert_close(last.maps, second.maps)


def test_upsample_maps_to_image_size(tiny_net, tiny_images):
    result = compute_cams(tiny_net, "relu", tiny_images)
    up = upsample_maps(result.maps, (48, 80))
    assert up.shape == (3, 1, 48, 80)


def test_bad_config_is_rejected(tiny_net, tiny_images):
    with pytest.raises(ValueError, match="method"):
        compute_cams(tiny_net, "relu", tiny_images, config=CamConfig(method="nope"))
    with pytest.raises(ValueError, match="outside"):
        compute_cams(tiny_net, "relu", tiny_images, classes=[10])


def test_gradient_method_takes_classes_from_an_inference_run(tiny_net, tiny_images):
    first = compute_cams(tiny_net, "relu", tiny_images)
    grad = compute_cams(tiny_net, "conv2", tiny_images, first.classes, config=CamConfig("gradcam"))
    assert torch.equal(grad.classes, first.classes)


def test_external_passes_share_one_buffer_with_torch_on_one_thread(tiny_net, tiny_images):
    """A backend's score_batch gets every chunk in one reused buffer, with torch on one thread
    meanwhile (its idle workers would spin against the backend); the count is restored after.
    Without a backend, the model runs the passes on torch's own threads."""
    if tiny_images.device.type != "cpu":
        pytest.skip("torch's CPU threads: a CPU-only rule")
    calls: list[tuple[int, int]] = []  # (buffer address, torch threads) per call

    def score_batch(images: torch.Tensor) -> torch.Tensor:
        calls.append((images.data_ptr(), torch.get_num_threads()))
        return tiny_net(images)

    eager_threads: list[int] = []
    hook = tiny_net.register_forward_pre_hook(
        lambda *_: eager_threads.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = CamConfig(batch_size=3)
        external = compute_cams(
            tiny_net, "relu", tiny_images, config=config, score_batch=score_batch
        )
        after = torch.get_num_threads()
        eager_threads.clear()
        eager = compute_cams(tiny_net, "relu", tiny_images, config=config)
    finally:
        torch.set_num_threads(before)
        hook.remove()
    torch.testing.assert_close(external.maps, eager.maps)
    assert external.forward_passes == 3 * 7 + 1  # 7 distinct masks per image + the zero mask
    masked = calls[1:]  # calls[0] scores the shared zero image
    assert len(masked) == 7  # 21 masked images in chunks of 3
    assert len({address for address, _ in masked}) == 1
    assert {threads for _, threads in calls} == {1}
    assert after == 2
    assert set(eager_threads) == {2} and len(eager_threads) == 1 + 8
