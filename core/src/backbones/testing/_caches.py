"""Caches of values derived from weights (such as attention biases): they must follow the weights."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import Backbone
from ._tensors import assert_close_maps

__all__ = ["assert_cache_follows_weights"]


def assert_cache_follows_weights(model: Backbone, weight: Tensor, pixels: Tensor, *, dtype_tolerance: float) -> None:
    """Assert a model that caches values derived from ``weight`` recomputes them when they are stale.

    ``model`` (in eval mode) runs ``pixels``, ``weight`` then changes in place (as an optimiser step or
    ``load_state_dict`` does): the first map must change, and equal the map of a fresh model of the same config
    loaded with the same weights. The model moved to float64 must give float64 maps within ``dtype_tolerance``
    of the float32 ones. The model is left in float64.

    Args:
        model: The model, with its first selected stage downstream of ``weight``.
        weight: A parameter (one of ``model``'s) the cached values derive from.
        pixels: The input.
        dtype_tolerance: Bound of the absolute difference between the float64 and float32 maps.
    """
    with torch.no_grad():
        before = model(pixels).feature_maps[0]
        weight.add_(torch.randn_like(weight))
        after = model(pixels).feature_maps[0]
        fresh = type(model)(model.config).eval()
        fresh.load_state_dict(model.state_dict())
        assert not torch.allclose(before, after), "the maps did not change with the weight: a stale cache"
        assert torch.equal(after, fresh(pixels).feature_maps[0])
        doubled = model.double()(pixels.double()).feature_maps[0]
    assert doubled.dtype == torch.float64
    assert_close_maps([doubled], [after], atol=dtype_tolerance)
