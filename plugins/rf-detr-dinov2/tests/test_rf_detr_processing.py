"""RfDetrImageProcessor against transformers' (torchvision-only) class: scale first, bilinear without antialias, pad."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from backbones import AutoImageProcessor, ConfigError
from backbones_rf_detr_dinov2 import RfDetrDinov2Backbone, RfDetrDinov2Config, RfDetrImageProcessor
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


def test_auto_image_processor_builds_it_from_a_checkpoint(tmp_path: Path) -> None:
    RfDetrDinov2Backbone(
        RfDetrDinov2Config(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32
        )
    ).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "RfDetrImageProcessor", "size": {"height": 32, "width": 32}})
    )
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is RfDetrImageProcessor and processor.size == {"height": 32, "width": 32}
    assert processor(_images()[0], return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)
    # transformers maps no processor to rf_detr_dinov2 (only to the detector type), so a file naming none is refused.
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}}))
    with pytest.raises(ConfigError, match="image_processor_type"):
        AutoImageProcessor.from_pretrained(tmp_path)


def test_other_filters_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"resample=3: RfDetrImageProcessor resizes with bilinear interpolation only"):
        RfDetrImageProcessor(resample=3)
