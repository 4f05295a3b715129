"""load_backbone: the backbone a head model's config describes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from backbones import ConfigError, UnknownModelTypeError, load_backbone
from backbones.testing import assert_close_maps, randomize_weights_
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

pytestmark = pytest.mark.usefixtures("registry")


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, ToyNetBackbone]:
    model = randomize_weights_(ToyNetBackbone(ToyNetConfig(widths=[4, 8], out_indices=[1, 2]))).eval()
    model.save_pretrained(tmp_path)
    return tmp_path, model


def test_backbone_config_object_dict_or_foreign_config() -> None:
    config = ToyNetConfig(widths=[4, 8], out_indices=[1])
    for head in (
        SimpleNamespace(backbone_config=config),
        {"backbone_config": config.to_dict()},
        SimpleNamespace(
            backbone_config=SimpleNamespace(model_type="toynet", to_dict=lambda: {"widths": [4, 8], "out_indices": [1]})
        ),
    ):
        backbone = load_backbone(head)
        assert isinstance(backbone, ToyNetBackbone)
        assert backbone.config.widths == [4, 8] and backbone.out_features == ["stage1"]


def test_a_backbone_config_itself() -> None:
    backbone = load_backbone(ToyNetConfig(widths=[2, 2, 2]))
    assert isinstance(backbone, ToyNetBackbone) and backbone.num_features == [2, 2, 2, 2]


def test_pretrained_backbone_with_kwargs(checkpoint: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = checkpoint
    head = {"backbone": str(directory), "use_pretrained_backbone": True, "backbone_kwargs": {"out_indices": [2]}}
    backbone = load_backbone(head)
    assert backbone.out_indices == [2]
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close_maps(backbone(pixels).feature_maps, model(pixels).feature_maps[1:], atol=0.0)


def test_backbone_without_pretrained_weights_reads_only_its_config(checkpoint: tuple[Path, ToyNetBackbone]) -> None:
    directory, model = checkpoint
    backbone = load_backbone({"backbone": str(directory), "use_pretrained_backbone": False})
    assert backbone.config.widths == [4, 8]
    assert not torch.equal(backbone.stem.weight, model.stem.weight), "weights are fresh, not loaded"


@pytest.mark.parametrize(
    ("head", "error", "message"),
    [
        (
            {"backbone_config": {"model_type": "toynet"}, "backbone_kwargs": {"out_indices": [1]}},
            ConfigError,
            "both backbone_kwargs and backbone_config are set",
        ),
        (
            {"backbone_config": {"model_type": "toynet"}, "backbone": "x/y", "use_pretrained_backbone": True},
            ConfigError,
            "both backbone_config and backbone",
        ),
        (
            {"use_pretrained_backbone": True, "backbone_config": None, "use_timm_backbone": False},
            ConfigError,
            "use_pretrained_backbone=True needs backbone",
        ),
        ({"use_timm_backbone": True}, ConfigError, "use_timm_backbone=True needs backbone set to a timm model name"),
        ({"backbone_kwargs": "oops", "backbone": "x/y"}, ConfigError, "backbone_kwargs must be a dict, got str"),
        ({"backbone_config": 3}, ConfigError, "backbone_config must be a BackboneConfig, a dict with 'model_type'"),
        ({"backbone_config": {"widths": [1]}}, ConfigError, "the config has no 'model_type'"),
    ],
)
def test_contradictions_and_gaps_are_clear(head: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        load_backbone(head)


def test_timm_backbone_without_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from backbones._registry import reset_registry

    monkeypatch.setenv("BACKBONES_DISABLE_PLUGINS", "backbones-timm")
    reset_registry()  # rediscover without it, as in an environment where it is not installed
    with pytest.raises(UnknownModelTypeError, match="Install its plugin with: pip install backbones-timm"):
        load_backbone({"backbone": "resnet18", "use_timm_backbone": True})
