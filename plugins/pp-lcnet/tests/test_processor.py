"""PPLCNetImageProcessor: what the PaddlePaddle/PP-LCNet_* checkpoints name, against transformers' processor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from backbones import ConfigError
from backbones.testing import ProcessorParity, imagenet_preprocessor
from backbones_pp_lcnet import PPLCNetImageProcessor

# PaddlePaddle/PP-LCNet_x1_0_doc_ori_safetensors' preprocessor_config.json (the class defaults, written out).
PREPROCESSOR = imagenet_preprocessor(
    "PPLCNetImageProcessor",
    image_mean=[0.406, 0.456, 0.485],
    image_std=[0.225, 0.224, 0.229],
    resize_short=256,
    size={"height": 256, "width": 256},
    size_divisor=1,
    do_center_crop=True,
    crop_size={"height": 224, "width": 224},
)
# transformers resizes with torchvision, we with Pillow; both filter bilinearly with antialiasing, and a
# downscaled 8-bit pixel may land one level apart: 1/255 over the smallest std.
ONE_LEVEL = 1 / 255 / 0.224 + 1e-6


def image(height: int, width: int, seed: int = 0) -> Image.Image:
    """A smooth RGB photo-like image (noise upscaled bicubically)."""
    noise = np.random.default_rng(seed).integers(0, 256, (max(2, height // 4), max(2, width // 4), 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((width, height), Image.BICUBIC)


def oracle(**settings: Any) -> Any:
    return transformers.PPLCNetImageProcessor(**settings)


class TestPPLCNetProcessorParity(ProcessorParity):
    """The checkpoints' processor, also when the file names no type (the model type's declared processor)."""

    model_type = "pp_lcnet"
    processor_class = PPLCNetImageProcessor
    preprocessor = PREPROCESSOR
    image_sizes = ((300, 400), (480, 256), (100, 90))  # downscaled, shortest edge already 256, upscaled
    expected_shape = (1, 3, 224, 224)
    tolerance = ONE_LEVEL

    def images(self, variant: str) -> list[Image.Image]:
        return [image(*size) for size in self.image_sizes]


def test_steps_without_resizing_match_to_float_rounding() -> None:
    picture = image(70, 52)
    settings = {"do_resize": False, "crop_size": {"height": 64, "width": 48}}
    expected = oracle(**settings)(picture, return_tensors="pt").pixel_values
    got = PPLCNetImageProcessor(**settings)(picture, return_tensors="pt").pixel_values
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # Normalised in RGB order with the mean and std as given, then the channels reversed: the first is blue.
    rgb = np.asarray(picture, dtype=np.float64)[3:67, 2:50] / 255
    first = (rgb[..., 2] - 0.485) / 0.229
    torch.testing.assert_close(got[0, 0].double(), torch.from_numpy(first), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("size", "settings", "shape"),
    [
        # round(333 * 100 / 250) = 133 (int() would give 133 too), 100; no crop.
        ((333, 250), {"resize_short": 100, "do_center_crop": False}, (133, 100)),
        # 250 -> 100 and round(333 * 100 / 250) = 133, then up to multiples of 32.
        ((250, 333), {"resize_short": 100, "size_divisor": 32, "do_center_crop": False}, (128, 160)),
        # 101 * 64 / 77 = 83.95: rounded (84), where the shortest-edge rule of other processors truncates (83).
        ((101, 77), {"resize_short": 64, "do_center_crop": False}, (84, 64)),
    ],
)
def test_resize_rule_is_transformers(size: tuple[int, int], settings: dict[str, Any], shape: tuple[int, int]) -> None:
    picture = image(*size)
    expected = oracle(**settings)(picture, return_tensors="pt").pixel_values
    got = PPLCNetImageProcessor(**settings)(picture, return_tensors="pt").pixel_values
    assert tuple(got.shape[2:]) == tuple(expected.shape[2:]) == shape
    assert (got - expected).abs().max().item() <= ONE_LEVEL


def test_defaults_are_transformers_defaults() -> None:
    ours, theirs = PPLCNetImageProcessor(), oracle().to_dict()
    names = ["do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "do_center_crop"]
    names += ["resize_short", "size_divisor", "size", "crop_size", "image_mean", "image_std"]
    assert {name: getattr(ours, name) for name in names} == {name: theirs[name] for name in names}
    assert ours.describe() == (
        "channels as given, resize the shortest edge to 256 (bilinear), centre-crop 224x224, scale to [0, 1], "
        "normalise with mean (0.406, 0.456, 0.485) and std (0.225, 0.224, 0.229), RGB to BGR"
    )


@pytest.mark.parametrize("name", ["resize_short", "size_divisor"])
def test_bad_sizes_name_the_field(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name}=0 must be a positive int or null"):
        PPLCNetImageProcessor(**{name: 0})
