"""Core's training switches combined: freezing, then pruning, then training."""

from __future__ import annotations

import json
from pathlib import Path

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


# -- the RT-DETR family's freeze_at / freeze_stem_only / freeze_norm config fields -----------------


@pytest.mark.parametrize(
    ("fields", "frozen"),
    [
        ({}, []),
        ({"freeze_at": -1}, []),
        ({"freeze_at": 0}, ["stem"]),
        ({"freeze_at": 2}, ["stem", "stage1", "stage2"]),
        ({"freeze_at": 4}, ["stem", "stage1", "stage2", "stage3", "stage4"]),
        ({"freeze_at": 3, "freeze_stem_only": True}, ["stem"]),
        ({"freeze_at": -1, "freeze_stem_only": True}, []),
    ],
)
def test_freeze_at_maps_onto_freeze_stages(fields: dict[str, object], frozen: list[str]) -> None:
    model = _tiny(**fields)
    assert model.frozen_stages == frozen
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    expected = _tiny()
    expected.freeze_stages(len(frozen))
    assert trainable == [name for name, p in expected.named_parameters() if p.requires_grad]


def test_freeze_norm_is_freeze_batch_norm_and_round_trips(tmp_path: Path) -> None:
    from backbones import AutoBackbone
    from backbones.layers import FrozenBatchNorm2d

    source = _tiny(out_indices=[1, 2])
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    source.eval().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data.update(freeze_at=0, freeze_norm=True)
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.clean, str(report)
    assert loaded.frozen_stages == ["stem"]
    norms = [m for m in loaded.modules() if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(pixels).feature_maps
        trained = loaded.train()(pixels).feature_maps  # frozen statistics: training mode changes nothing
    for ours, theirs in zip(trained, expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    loaded.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert (saved["freeze_at"], saved["freeze_norm"]) == (0, True)
    assert "freeze_stem_only" not in saved  # only what the file had is written back


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"freeze_at": -2}, r"freeze_at=-2: must be an int between -1 \(freeze nothing\) and 4 \(the stages after"),
        ({"freeze_at": 5}, r"freeze_at=5: must be an int between -1 .* and 4"),
        ({"freeze_at": 1.0}, r"freeze_at=1\.0: must be an int"),
        ({"freeze_at": True}, r"freeze_at=True: must be an int"),
        ({"freeze_norm": "yes"}, r"freeze_norm='yes': must be true or false"),
        ({"freeze_stem_only": 1}, r"freeze_stem_only=1: must be true or false"),
    ],
)
def test_bad_freeze_fields_are_config_errors(fields: dict[str, object], message: str) -> None:
    from backbones import ConfigError

    with pytest.raises(ConfigError, match=r"invalid ResNetConfig: " + message):
        _tiny(**fields)


def test_assigning_a_bad_freeze_field_keeps_the_old_value() -> None:
    from backbones import ConfigError

    config = _tiny(freeze_at=1).config
    with pytest.raises(ConfigError, match="freeze_at=9"):
        config.freeze_at = 9
    assert config.freeze_at == 1
    config.freeze_at = 2
    assert ResNetBackbone(config).frozen_stages == ["stem", "stage1", "stage2"]
