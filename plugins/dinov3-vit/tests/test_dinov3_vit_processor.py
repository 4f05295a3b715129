"""DINOv3 checkpoints' image processor through AutoImageProcessor, against transformers 5.23's.

transformers has only a torchvision-backed ``DINOv3ViTImageProcessor`` (no PIL class): it scales to [0, 1]
before resizing, so the resize filters floats. Core's ``DINOv3ViTImageProcessor`` family does the same with
Pillow's float filter; the two agree to float rounding (resizing 8-bit values first would differ by ~1e-2).
"""

from __future__ import annotations

import pytest

from backbones import ImageProcessor
from backbones.testing import ProcessorParity, imagenet_preprocessor

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

# facebook/dinov3-vits16-pretrain-lvd1689m's preprocessor_config.json, with a 64x48 size instead of 224x224.
PREPROCESSOR = imagenet_preprocessor("DINOv3ViTImageProcessorFast", size={"height": 64, "width": 48})


class TestDINOv3ViTProcessorParity(ProcessorParity):
    """As saved, without a type (the plugin's declared fallback applies) and with no keys but the type and size."""

    model_type = "dinov3_vit"
    processor_type = "DINOv3ViTImageProcessor"
    reference_options = {"size": PREPROCESSOR["size"]}
    preprocessor = PREPROCESSOR
    minimal_keys = ("size",)
    expected_attributes = {"rescale_before_resize": True}
    description = (
        "channels as given, scale to [0, 1], resize to 64x48 (bilinear), "
        "normalise with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)"
    )
    image_sizes = ((97, 131), (30, 20))  # downscaled and upscaled, as the checkpoints' users feed them
    expected_shape = (1, 3, 64, 48)
    tolerance = 2e-5


def test_rescaling_first_is_what_makes_the_match() -> None:
    """The same settings run in the usual order (resize 8-bit values, then rescale) are measurably off."""
    settings = {key: value for key, value in PREPROCESSOR.items() if key != "image_processor_type"}
    usual = ImageProcessor(**settings, do_convert_rgb=False)
    assert not usual.rescale_before_resize
    oracle = transformers.DINOv3ViTImageProcessor(size=PREPROCESSOR["size"])
    image = TestDINOv3ViTProcessorParity().images("named")[0]
    difference = usual(image, return_tensors="pt")["pixel_values"] - oracle(image, return_tensors="pt")["pixel_values"]
    assert difference.abs().max() > 1e-3
