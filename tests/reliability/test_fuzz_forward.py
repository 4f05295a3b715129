"""Forward inputs fuzzed with hypothesis: every outcome is a correct result or an InputError, never an error
from inside torch.

For one backbone of each kind (a CNN, a windowed transformer, a ViT, a ConvNeXt), hypothesis draws the
batch (0 to 3), the channel count, the size (1 to 70 a side), the dtype (float32/16, bfloat16, uint8,
int64), the layout (contiguous, a transposed view, channels_last) and NaN/inf pixels. A valid input (a
batch, the model's channels, floating point, at least ``minimum_input_size``) must compute: the maps have
the shapes the model reports and equal those of the same values given contiguous in float32. An invalid one
must be an InputError whose message names the offending property.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backbones import AutoBackbone, AutoBackboneConfig, Backbone, BackboneError, InputError

TINY: dict[str, dict[str, Any]] = {
    "resnet": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "out_indices": [1, 2]},
    "swin": {
        "embed_dim": 8,
        "depths": [1, 1],
        "num_heads": [1, 2],
        "window_size": 4,
        "image_size": 32,
        "out_indices": [1, 2],
    },
    "dinov2": {
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 4,
        "image_size": 32,
        "out_indices": [1, 2],
    },
    "convnext": {"hidden_sizes": [8, 16], "depths": [1, 1], "out_indices": [1, 2]},
}
_MODELS: dict[str, Backbone] = {}


def _model(model_type: str) -> Backbone:
    if model_type not in _MODELS:
        torch.manual_seed(0)
        config = AutoBackboneConfig.for_model(model_type, **TINY[model_type])
        _MODELS[model_type] = AutoBackbone.from_config(config).eval()
    return _MODELS[model_type]


def _layout(pixels: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "transposed" and pixels.dim() == 4:
        return pixels.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "channels_last" and pixels.dim() == 4:
        return pixels.contiguous(memory_format=torch.channels_last)
    return pixels


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    model_type=st.sampled_from(sorted(TINY)),
    # Each fault is drawn about one time in eight, so that about half the inputs are valid.
    batch=st.sampled_from([1, 1, 2, 2, 3, 3, 1, 0]),
    channel_delta=st.sampled_from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -2, 1]),
    height=st.one_of(st.integers(16, 70), st.integers(16, 70), st.integers(16, 70), st.integers(1, 15)),
    width=st.one_of(st.integers(16, 70), st.integers(16, 70), st.integers(16, 70), st.integers(1, 15)),
    dtype=st.sampled_from([torch.float32] * 4 + [torch.float16, torch.bfloat16] * 3 + [torch.uint8, torch.int64]),
    layout=st.sampled_from(["contiguous", "transposed", "channels_last"]),
    poison=st.sampled_from([None, float("nan"), float("inf")]),
    dims=st.sampled_from([4] * 15 + [3]),
    seed=st.integers(0, 2**16),
)
def test_forward_gives_a_correct_result_or_an_input_error(
    model_type: str,
    batch: int,
    channel_delta: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    layout: str,
    poison: float | None,
    dims: int,
    seed: int,
) -> None:
    model = _model(model_type)
    channels = model.config.num_channels + channel_delta
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(batch, channels, height, width, generator=generator) * 2 - 1
    if poison is not None and batch:
        values[0, :, 0, 0] = poison
    if dims == 3:
        values = values[0] if batch else values.reshape(channels, height, width * 0)
    pixels = _layout(
        (values * 100).clamp(0, 255).to(dtype) if not dtype.is_floating_point else values.to(dtype), layout
    )

    floating = dtype.is_floating_point
    minimum = model.minimum_input_size
    valid = dims == 4 and batch > 0 and channel_delta == 0 and floating and min(height, width) >= minimum
    event("valid input" if valid else "invalid input")
    try:
        with torch.no_grad():
            maps = model(pixels).feature_maps
    except BackboneError as error:
        assert isinstance(error, InputError), f"{type(error).__name__}: {error}"
        assert not valid, f"a valid {tuple(pixels.shape)} {dtype} input was refused: {error}"
        # With several faults at once, the message names one of them (the first one checked).
        named = {
            "not 4-D": dims != 4 and "4-D" in str(error),
            "empty batch": batch == 0 and "batch size 0" in str(error),
            "integer dtype": not floating and str(dtype) in str(error),
            "channels": channel_delta != 0 and f"{channels} channel" in str(error),
            "size": min(height, width) < minimum and f"{height}x{width}" in str(error),
        }
        assert any(named.values()), f"{tuple(pixels.shape)} {dtype}: the error names none of its faults: {error}"
        return
    assert valid, f"an invalid input ran: {tuple(pixels.shape)} {dtype}"
    assert len(maps) == len(model.channels)
    for fmap, channels_out in zip(maps, model.channels):
        assert fmap.dtype == torch.float32 and fmap.shape[:2] == (batch, channels_out) and fmap.dim() == 4
    with torch.no_grad():
        reference = model(pixels.float().contiguous()).feature_maps
    for fmap, want in zip(maps, reference):
        torch.testing.assert_close(fmap, want, rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("model_type", sorted(TINY))
def test_the_fuzzed_models_run_their_training_size(model_type: str) -> None:
    """The sweep above is not vacuous: each model computes a plain valid input."""
    model = _model(model_type)
    with torch.no_grad():
        maps = model(torch.rand(2, model.config.num_channels, 32, 32)).feature_maps
    assert [fmap.shape[:2] for fmap in maps] == [(2, channels) for channels in model.channels]
