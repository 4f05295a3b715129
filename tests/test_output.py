"""BackboneOutput: attribute, key and tuple access like transformers' outputs."""

from __future__ import annotations

import pytest
import torch

from backbones import BackboneOutput


def test_access_by_attribute_key_and_position() -> None:
    maps = (torch.zeros(1, 2, 4, 4), torch.ones(1, 3, 2, 2))
    states = (torch.full((1,), 5.0),)
    output = BackboneOutput(feature_maps=maps, hidden_states=states)
    assert output.feature_maps is maps and output["feature_maps"] is maps and output[0] is maps
    assert output[1] is states and output["hidden_states"] is states
    assert output.keys() == ["feature_maps", "hidden_states"] and len(output) == 2
    assert "attentions" not in output and "hidden_states" in output
    first, second = output
    assert first is maps and second is states
    assert output.to_tuple() == (maps, states) and output[-1] is states
    with pytest.raises(
        KeyError, match=r"'attentions' is not set in this output; set fields are \['feature_maps', 'hidden_states'\]"
    ):
        output["attentions"]
    with pytest.raises(IndexError):
        output[2]
