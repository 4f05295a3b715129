"""RfDetrImageProcessor against transformers' (torchvision-only) class: scale first, bilinear without antialias, pad."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from backbones import ConfigError
from backbones.testing import ProcessorParity
from backbones_rf_detr_dinov2 import RfDetrImageProcessor
from backbones_rf_detr_dinov2._processing import bilinear_without_antialias


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in ((37, 53, 3), (61, 29, 3))]


@pytest.mark.parametrize(
    "fields",
    [
        {},  # transformers' defaults: shortest edge 800, longest at most 1333 (enlarging)
        {"size": {"height": 24, "width": 40}},  # a fixed size, shrinking one axis
        {"size": {"shortest_edge": 20, "longest_edge": 30}},  # shrinking, aspect kept
        {"size": {"height": 32, "width": 32}, "pad_size": {"height": 48, "width": 40}},
    ],
)
def test_matches_transformers(fields: dict[str, Any]) -> None:
    images = _images()
    oracle = transformers.RfDetrImageProcessor(**fields)(images, return_tensors="pt")
    ours = RfDetrImageProcessor(**fields)(images, return_tensors="pt")
    assert set(ours) == {"pixel_values", "pixel_mask"}
    assert ours["pixel_values"].shape == oracle["pixel_values"].shape
    torch.testing.assert_close(ours["pixel_values"], oracle["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(ours["pixel_mask"], oracle["pixel_mask"])


def test_bilinear_matches_torch_interpolate() -> None:
    image = np.random.default_rng(1).random((13, 17, 3)).astype(np.float32)
    for height, width in ((5, 9), (13, 17), (30, 41)):
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(image).permute(2, 0, 1)[None], (height, width), mode="bilinear", align_corners=False
        )[0].permute(1, 2, 0)
        torch.testing.assert_close(
            torch.from_numpy(bilinear_without_antialias(image, height, width)), expected, atol=1e-6, rtol=0
        )


class TestRfDetrProcessorParity(ProcessorParity):
    """AutoImageProcessor builds it from a checkpoint naming it; transformers maps no processor to rf_detr_dinov2
    (only to the detector type), so a file naming none is refused."""

    model_type = "rf_detr_dinov2"
    processor_class = RfDetrImageProcessor
    preprocessor = {"image_processor_type": "RfDetrImageProcessor", "size": {"height": 32, "width": 32}}
    fallback_error = "image_processor_type"
    expected_attributes = {"size": {"height": 32, "width": 32}}
    image_sizes = ((37, 53),)
    expected_shape = (1, 3, 32, 32)


def test_other_filters_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"resample=3: RfDetrImageProcessor resizes with bilinear interpolation only"):
        RfDetrImageProcessor(resample=3)
