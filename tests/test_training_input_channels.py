"""Non-RGB input from RGB weights: ``from_pretrained(rgb_checkpoint, num_channels=C)`` adapts the input
convolution (C=1: filters summed; otherwise repeated cyclically and scaled by 3/C)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backbones import AutoBackbone, AutoBackboneConfig, AutoImageProcessor, Backbone, WeightsMismatchError
from backbones._loading import adapt_input_channels
from backbones.testing import assert_close_maps, feature_map_loss, randomize_weights_

RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "out_indices": [0, 1, 2]}
DINOV2 = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
CASES = {
    "resnet": (RESNET, "embedder.embedder.convolution.weight"),
    "dinov2": ({**DINOV2, "out_indices": [1, 2]}, "embeddings.patch_embeddings.projection.weight"),
}


def _rgb_checkpoint(tmp_path: Path, model_type: str) -> tuple[Path, Backbone]:
    fields, _ = CASES[model_type]
    torch.manual_seed(0)
    model = randomize_weights_(AutoBackbone.from_config(AutoBackboneConfig.for_model(model_type, **fields))).eval()
    model.save_pretrained(tmp_path / model_type)
    (tmp_path / model_type / "preprocessor_config.json").write_text(
        '{"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32}, '
        '"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}'
    )
    return tmp_path / model_type, model


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_one_channel_on_grey_equals_rgb_on_repeated_grey(tmp_path: Path, model_type: str) -> None:
    path, rgb = _rgb_checkpoint(tmp_path, model_type)
    grey, report = AutoBackbone.from_pretrained(path, num_channels=1, output_loading_info=True, strict=True)
    key = CASES[model_type][1]
    assert report.adapted_keys == {key: "3 -> 1 input channels, filters summed"}
    assert report.clean and f"adapted to the model: {key} (3 -> 1 input channels, filters summed)" in str(report)
    assert grey.config.num_channels == 1
    assert grey.state_dict()[key].shape[1] == 1
    image = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_close_maps(grey(image).feature_maps, rgb(image.repeat(1, 3, 1, 1)).feature_maps, atol=1e-5)


@pytest.mark.parametrize(("model_type", "channels"), [("resnet", 4), ("resnet", 2), ("dinov2", 4), ("dinov2", 2)])
def test_more_or_fewer_channels_load_and_train(tmp_path: Path, model_type: str, channels: int) -> None:
    path, rgb = _rgb_checkpoint(tmp_path, model_type)
    model, report = AutoBackbone.from_pretrained(path, num_channels=channels, output_loading_info=True)
    key = CASES[model_type][1]
    how = f"3 -> {channels} input channels, filters repeated cyclically, scaled by 3/{channels}"
    assert report.adapted_keys == {key: how} and report.clean
    source = rgb.state_dict()[key]
    expected = source[:, [0, 1, 2, 0][:channels]] * (3 / channels)
    torch.testing.assert_close(model.state_dict()[key], expected, rtol=0, atol=1e-7)
    # Everything else is loaded unchanged.
    for name, value in rgb.state_dict().items():
        if name != key:
            assert torch.equal(model.state_dict()[name], value), name
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pixels = torch.randn(2, channels, 32, 32, generator=torch.Generator().manual_seed(4))
    feature_map_loss(model(pixels).feature_maps).backward()
    optimizer.step()
    assert not torch.equal(model.state_dict()[key], expected), "the adapted convolution was not trained"
    with torch.no_grad():
        assert all(torch.isfinite(fmap).all() for fmap in model(pixels).feature_maps)


def test_the_rule_itself() -> None:
    weight = torch.arange(2 * 3 * 1 * 1, dtype=torch.float32).view(2, 3, 1, 1)
    assert adapt_input_channels(weight, 1).flatten().tolist() == [3.0, 12.0]
    assert adapt_input_channels(weight, 5)[0].flatten().tolist() == pytest.approx([0.0, 0.6, 1.2, 0.0, 0.6])
    half = adapt_input_channels(weight.to(torch.bfloat16), 2)
    assert half.dtype == torch.bfloat16 and half.shape == (2, 2, 1, 1)


def test_same_channels_and_other_mismatches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = _rgb_checkpoint(tmp_path, "resnet")
    _, report = AutoBackbone.from_pretrained(path, num_channels=3, output_loading_info=True)
    assert report.adapted_keys == {} and "adapted" not in str(report)
    # Only the input convolution is adapted: another shape mismatch is still refused.
    with pytest.raises(
        WeightsMismatchError, match=r"do not fit ResNetBackbone .*embedder\.embedder\.convolution\.weight"
    ):
        AutoBackbone.from_pretrained(path, num_channels=2, embedding_size=4)
    with caplog.at_level(logging.INFO, logger="backbones"):
        AutoBackbone.from_pretrained(path, num_channels=2)
    assert "adapted to the model: embedder.embedder.convolution.weight" in caplog.text


def test_preprocessing_needs_statistics_for_the_new_channels(tmp_path: Path) -> None:
    path, _ = _rgb_checkpoint(tmp_path, "resnet")
    model = AutoBackbone.from_pretrained(path, num_channels=4)
    image = np.random.default_rng(0).random((32, 32, 4), dtype=np.float32)
    processor = AutoImageProcessor.from_pretrained(path, do_convert_rgb=False, do_rescale=False)
    with pytest.raises(
        ValueError,
        match=r"^image 0 has 4 channel\(s\) but image_mean has 3 values: give image_mean and image_std one value per "
        r"channel, as a model loaded with num_channels=4 needs \(or set do_convert_rgb=True to make it RGB\)$",
    ):
        processor(image, return_tensors="pt")
    stats: dict[str, Any] = {"image_mean": [0.5, 0.5, 0.5, 0.4], "image_std": [0.5, 0.5, 0.5, 0.2]}
    processor = AutoImageProcessor.from_pretrained(path, do_convert_rgb=False, do_rescale=False, **stats)
    pixels = processor(image, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 4, 32, 32)
    torch.testing.assert_close(pixels[0, 3], torch.from_numpy((image[..., 3] - 0.4) / 0.2))
    with torch.no_grad():
        assert [tuple(f.shape) for f in model(pixels).feature_maps] == [(1, 8, 8, 8), (1, 8, 8, 8), (1, 16, 4, 4)]
