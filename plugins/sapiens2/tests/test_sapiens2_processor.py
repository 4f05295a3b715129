"""Sapiens2 checkpoints' image processor through AutoImageProcessor, against transformers 5.23's.

transformers has only a torchvision-backed ``Sapiens2ImageProcessor`` (no PIL class): it resizes the 8-bit image
with torchvision, and this plugin's class (core's pipeline) with Pillow. Upscaled images agree to float rounding;
downscaled ones differ in a few pixels by one 8-bit level (1/255 before normalising), the two libraries' rounding.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from backbones import ConfigError
from backbones.testing import ProcessorParity, imagenet_preprocessor

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")

from backbones_sapiens2 import Sapiens2ImageProcessor  # noqa: E402 -- after the skips

# facebook/sapiens2-seg-0.4b's preprocessor_config.json (transformers' class defaults written out), with a 64x48
# size instead of 1024x768.
PREPROCESSOR = imagenet_preprocessor(
    "Sapiens2ImageProcessor",
    do_pad=False,
    do_reduce_labels=False,
    keypoint_heatmap_downscale_factor=4,
    keypoint_heatmap_sigma=6.0,
    size={"height": 64, "width": 48},
)
# One 8-bit level after normalising by the smallest std.
ONE_LEVEL = 1 / 255 / 0.224 + 1e-5


class TestSapiens2ProcessorParity(ProcessorParity):
    """As saved, without a type (the plugin's declared fallback applies), with only the type and size, and padded
    (the normal and pointmap checkpoints' ``do_pad``: fit inside the size keeping the aspect ratio, then pad)."""

    model_type = "sapiens2"
    processor_class = Sapiens2ImageProcessor
    reference_options = {"size": PREPROCESSOR["size"]}
    preprocessor = PREPROCESSOR
    minimal_keys = ("size",)
    variants = {"padded": {"do_pad": True}}
    description = (
        "channels as given, resize to 64x48 (bilinear), scale to [0, 1], "
        "normalise with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)"
    )
    # Downscaled (97 x 131, 200 x 150) and upscaled (30 x 20), as the checkpoints' users feed them.
    image_sizes = ((97, 131), (200, 150), (30, 20))
    expected_shape = (1, 3, 64, 48)
    tolerance = (ONE_LEVEL, ONE_LEVEL, 1e-5)  # upscaling: the same to float rounding
    rounding_fraction = 0.05  # Pillow's and torchvision's rounding, rarely
    variant_settings = {
        "padded": {
            "reference_options": {"size": PREPROCESSOR["size"], "do_pad": True},
            "expected_attributes": {"do_pad": True},
            "description": (
                "channels as given, resize into 64x48 (bilinear) keeping the aspect ratio, pad with zeros to "
                "64x48, scale to [0, 1], normalise with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)"
            ),
            "tolerance": ONE_LEVEL,
        }
    }

    def compare(self, ours: Any, reference: Any, variant: str) -> list[float]:
        worst = super().compare(ours, reference, variant)
        if variant == "padded":
            # A 97x131 image fits as 35x48 (rounded down): 14 rows of padding above it, 15 below.
            (pixels,) = ours(self.images(variant)[0], return_tensors="pt")["pixel_values"]
            padding = torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]).view(3, 1, 1)
            assert torch.allclose(pixels[:, :14], padding.expand(3, 14, 48))
            assert torch.allclose(pixels[:, -15:], padding.expand(3, 15, 48))
            assert not torch.allclose(pixels[:, 14:15], padding.expand(3, 1, 48))
        return worst


def test_processor_defaults_are_transformers_defaults() -> None:
    ours, oracle = Sapiens2ImageProcessor(), transformers.Sapiens2ImageProcessor()
    assert ours.size == dict(oracle.size) == {"height": 1024, "width": 768}
    assert ours.resample == int(oracle.resample) == 2
    assert ours.image_mean == tuple(oracle.image_mean) and ours.image_std == tuple(oracle.image_std)
    assert ours.do_pad is oracle.do_pad is False and ours.do_convert_rgb is False


def test_padding_needs_a_fixed_size() -> None:
    with pytest.raises(ConfigError, match=r"do_pad \(resize into size keeping the aspect ratio, then pad\) needs size"):
        Sapiens2ImageProcessor(size={"shortest_edge": 64}, do_pad=True)
    with pytest.raises(ConfigError, match=r"do_pad='yes' must be true or false"):
        Sapiens2ImageProcessor(do_pad="yes")  # type: ignore[arg-type]
