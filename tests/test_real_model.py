"""The embedded EfficientNet-Lite0 on a real photo: the map points at the object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scorecam_cli.cam import compute_cams
from scorecam_cli.images import preprocess, read_image
from scorecam_cli.layers import default_layer
from scorecam_cli.models import load_model
from scorecam_cli.render import resize_map

COFFEE = Path(__file__).parent.parent / "sample_images" / "coffee.png"
CUP_BOX = (150, 0, 440, 250)  # x0, y0, x1, y1 of the cup (saucer excluded) in the 600x400 photo


def test_scorecam_on_the_embedded_model_finds_the_cup():
    loaded = load_model()
    prep = loaded.preprocessing
    image = read_image(COFFEE)  # (400, 600, 3)
    batch = torch.from_numpy(preprocess(image, prep.input_size, prep.mean, prep.std))[None]
    layer = default_layer(loaded.module, prep.input_size).ref
    result = compute_cams(loaded.module, layer, batch)
    assert loaded.class_name(int(result.classes[0, 0])) in {"espresso", "cup", "coffee mug"}
    # Sharing is exact and worth it: the embedded model leaves many head channels constant.
    assert result.forward_passes_saved > 0.3 * 1280
    cam = resize_map(result.maps[0, 0].numpy(), image.shape[:2])  # (400, 600)
    assert cam.max() > 0
    hot = cam > 0.5 * cam.max()
    assert 0.02 < hot.mean() < 0.6  # neither blank nor everywhere
    y, x = np.unravel_index(np.argmax(cam), cam.shape)
    x0, y0, x1, y1 = CUP_BOX
    assert x0 <= x <= x1 and y0 <= y <= y1, f"peak at {(x, y)} is off the cup"
