"""Core's training switches combined: freezing, then pruning, then training."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("backbones_resnet")

from backbones_resnet import ResNetBackbone, ResNetConfig


def _tiny(**overrides: object) -> ResNetBackbone:
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic", **overrides
    )
    return ResNetBackbone(config)


def test_pruning_below_the_frozen_stages_keeps_train_working() -> None:
    model = _tiny(out_indices=[1])
    assert model.freeze_stages(4) == ["stem", "stage1", "stage2", "stage3"]
    assert model.prune_unused_stages() == ["stage2", "stage3", "stage4"]
    assert model.frozen_stages == ["stem", "stage1"]
    model.train()
    assert not any(module.training for module in model.embedder.modules())
    maps = model(torch.randn(1, 3, 32, 32)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 8, 8, 8)]
