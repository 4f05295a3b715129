"""DINOv3 checkpoints' image processor through AutoImageProcessor, against transformers 5.23's.

transformers has only a torchvision-backed ``DINOv3ViTImageProcessor`` (no PIL class): it scales to [0, 1]
before resizing, so the resize filters floats. Core's ``DINOv3ViTImageProcessor`` family does the same with
Pillow's float filter; the two agree to float rounding (resizing 8-bit values first would differ by ~1e-2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backbones import AutoImageProcessor, ImageProcessor

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

# facebook/dinov3-vits16-pretrain-lvd1689m's preprocessor_config.json, with a 64x48 size instead of 224x224.
PREPROCESSOR: dict[str, Any] = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "DINOv3ViTImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 64, "width": 48},
}


def _images() -> list[Any]:
    rng = np.random.default_rng(0)
    # Downscaled (97 x 131) and upscaled (30 x 20), as the checkpoints' users feed them.
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in ((97, 131, 3), (30, 20, 3))]


@pytest.mark.parametrize("variant", ["as saved", "no type named", "no keys but the type"])
def test_checkpoint_processor_matches_transformers(tmp_path: Path, variant: str) -> None:
    data = dict(PREPROCESSOR)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov3_vit"}))
    if variant == "no type named":
        del data["image_processor_type"]  # the plugin's declared fallback applies
    elif variant == "no keys but the type":
        data = {"image_processor_type": "DINOv3ViTImageProcessor", "size": PREPROCESSOR["size"]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(ours, ImageProcessor) and ours.rescale_before_resize
    assert ours.image_processor_type == "DINOv3ViTImageProcessor"
    assert ours.describe() == (
        "channels as given, scale to [0, 1], resize to 64x48 (bilinear), "
        "normalise with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)"
    )
    oracle = transformers.DINOv3ViTImageProcessor(size=PREPROCESSOR["size"])
    for image in _images():
        theirs = oracle(image, return_tensors="pt")["pixel_values"]
        mine = ours(image, return_tensors="pt")["pixel_values"]
        assert mine.shape == theirs.shape == (1, 3, 64, 48)
        assert torch.allclose(mine, theirs, rtol=0, atol=2e-5), (mine - theirs).abs().max()


def test_rescaling_first_is_what_makes_the_match() -> None:
    """The same settings run in the usual order (resize 8-bit values, then rescale) are measurably off."""
    settings = {key: value for key, value in PREPROCESSOR.items() if key != "image_processor_type"}
    usual = ImageProcessor(**settings, do_convert_rgb=False)
    assert not usual.rescale_before_resize
    oracle = transformers.DINOv3ViTImageProcessor(size=PREPROCESSOR["size"])
    image = _images()[0]
    difference = usual(image, return_tensors="pt")["pixel_values"] - oracle(image, return_tensors="pt")["pixel_values"]
    assert difference.abs().max() > 1e-3
