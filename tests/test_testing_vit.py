"""The ViT conformance kit's shared tables and checks (``backbones.testing.vit``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backbones.testing.vit import REFERENCE_LAYER_RENAMES, SMALL_VIT, assert_layer_scaled_init, redrawn_when_missing


def _renamed(name: str) -> str:
    for pattern, replacement in REFERENCE_LAYER_RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("encoder.layer.0.attention.attention.query.weight", "encoder.layer.0.attention.q_proj.weight"),
        ("encoder.layer.1.attention.attention.key.bias", "encoder.layer.1.attention.k_proj.bias"),
        ("encoder.layer.2.attention.attention.value.weight", "encoder.layer.2.attention.v_proj.weight"),
        # The attention's output projection is renamed before the MLP's, whose pattern it also holds.
        ("encoder.layer.0.attention.output.dense.weight", "encoder.layer.0.attention.o_proj.weight"),
        ("encoder.layer.0.intermediate.dense.bias", "encoder.layer.0.mlp.fc1.bias"),
        ("encoder.layer.0.output.dense.weight", "encoder.layer.0.mlp.fc2.weight"),
        # Names transformers keeps, DINOv2's MLP among them, are left alone.
        ("encoder.layer.0.mlp.fc1.weight", "encoder.layer.0.mlp.fc1.weight"),
        ("encoder.layer.0.norm1.weight", "encoder.layer.0.norm1.weight"),
        ("embeddings.cls_token", "embeddings.cls_token"),
    ],
)
def test_reference_layer_renames_give_transformers_in_memory_names(ours: str, theirs: str) -> None:
    assert _renamed(ours) == theirs


def test_layer_scaled_init_holds_for_a_fresh_dinov2_layer_and_refuses_another_scale() -> None:
    torch = pytest.importorskip("torch")
    dinov2 = pytest.importorskip("backbones_dinov2")
    from backbones import AutoBackbone

    torch.manual_seed(0)
    config = dinov2.Dinov2Config(**SMALL_VIT, layerscale_value=0.25)
    layer = AutoBackbone.from_config(config).encoder.layer[1]
    assert_layer_scaled_init(layer, layer.attention.attention.query, layer.mlp.fc1, layer_scale=0.25)
    with pytest.raises(AssertionError):
        assert_layer_scaled_init(layer, layer.attention.attention.query, layer.mlp.fc1, layer_scale=1.0)
    with torch.no_grad():
        layer.norm1.bias.fill_(0.5)
    with pytest.raises(AssertionError):
        assert_layer_scaled_init(layer, layer.attention.attention.query, layer.mlp.fc1, layer_scale=0.25)


def test_redrawn_when_missing_returns_the_weight_drawn_with_the_configs_spread(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    dinov2 = pytest.importorskip("backbones_dinov2")

    config = dinov2.Dinov2Config(**SMALL_VIT)
    table = redrawn_when_missing(config, tmp_path / "a", "embeddings.position_embeddings", "embeddings.cls_token")
    assert tuple(table.shape) == (1, 1 + 16, 32)
    # The spread expected is the config's initializer_range.
    wide = dinov2.Dinov2Config(**SMALL_VIT, initializer_range=0.2)
    table = redrawn_when_missing(wide, tmp_path / "b", "embeddings.position_embeddings", "embeddings.cls_token")
    assert table.std().item() == pytest.approx(0.2, rel=0.15)
