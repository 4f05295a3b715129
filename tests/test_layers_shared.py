"""Core helpers that several plugins' constructors and configs share (backbones.layers, backbones.validation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones.layers import query_key_value_projections
from backbones.validation import check_positive_mlp_ratio


@pytest.mark.parametrize("bias", [True, False])
def test_query_key_value_projections_are_three_square_linears(bias: bool) -> None:
    projections = query_key_value_projections(6, bias=bias)
    assert len(projections) == 3
    assert len({id(layer) for layer in projections}) == 3, "three separate modules, no shared weights"
    for layer in projections:
        assert isinstance(layer, nn.Linear)
        assert (layer.in_features, layer.out_features) == (6, 6)
        assert (layer.bias is not None) is bias


def test_query_key_value_projections_key_bias_overrides_bias_for_the_key_only() -> None:
    query, key, value = query_key_value_projections(4, key_bias=False)
    assert (query.bias is not None, key.bias is None, value.bias is not None) == (True, True, True)
    query, key, value = query_key_value_projections(4, bias=False, key_bias=True)
    assert (query.bias is None, key.bias is not None, value.bias is None) == (True, True, True)


def test_query_key_value_projections_draw_weights_as_three_linears_written_out() -> None:
    torch.manual_seed(3)
    query, key, value = query_key_value_projections(4)
    torch.manual_seed(3)
    expected = [nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)]
    for made, written in zip((query, key, value), expected, strict=True):
        torch.testing.assert_close(made.weight, written.weight, rtol=0, atol=0)
        assert made.bias is not None and written.bias is not None
        torch.testing.assert_close(made.bias, written.bias, rtol=0, atol=0)


def test_query_key_value_projections_register_in_checkpoint_order() -> None:
    module = nn.Module()
    module.query, module.key, module.value = query_key_value_projections(2, bias=False)
    assert list(module.state_dict()) == ["query.weight", "key.weight", "value.weight"]


def test_mlp_ratio_message_names_the_mlp_it_checks() -> None:
    check_positive_mlp_ratio(0.5, 2, mlp="the first stage's MLP")
    with pytest.raises(
        ValueError, match=r"^mlp_ratio=0.25 leaves the first stage's MLP with no hidden units; raise mlp_ratio$"
    ):
        check_positive_mlp_ratio(0.25, 2, mlp="the first stage's MLP")
    with pytest.raises(ValueError, match=r"^mlp_ratio=0.1 leaves the MLP with no hidden units; raise mlp_ratio$"):
        check_positive_mlp_ratio(0.1, 4)
