"""The timm wrapper's config as transformers' TimmBackboneConfig (issue 17, item 6), against transformers 5.23.

(a) keys timm does not take stay in the config but never reach ``timm.create_model``; (b) a config without a
backbone constructs; (c) out_indices defaults to ``[-1]``, also for a transformers checkpoint without it;
(d) ``stage_names`` can be assigned as transformers' code assigns it. And ``backbone_type`` is ``"timm"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import transformers

from backbones import AutoBackbone, BackboneType, ConfigError
from backbones.testing import randomize_weights_
from backbones_timm import TimmBackbone, TimmBackboneConfig
from backbones_timm import _timm as timm_module

STAGES = ["act1", "layer1", "layer2", "layer3", "layer4"]  # resnet18's and test_resnet's feature_info modules


@pytest.fixture
def create_model_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every timm.create_model call the plugin makes."""
    calls: list[dict[str, Any]] = []
    real = timm.create_model

    def spy(name: str, **kwargs: Any) -> Any:
        calls.append({"name": name, **kwargs})
        return real(name, **kwargs)

    monkeypatch.setattr(timm_module.timm, "create_model", spy)
    timm_module.describe_features.cache_clear()
    timm_module.model_arguments.cache_clear()
    return calls


# -- (a) keys timm does not take ----------------------------------------------------------------------------


def test_transformers_keys_are_kept_but_not_passed_to_timm(create_model_calls: list[dict[str, Any]]) -> None:
    config = TimmBackboneConfig(
        backbone="test_resnet", image_size=32, hidden_size=8, depthz=3, drop_path_rate=0.1, avg_down=False
    )
    assert config.timm_kwargs == {"drop_path_rate": 0.1, "avg_down": False}
    model = TimmBackbone(config)
    passed = {key for call in create_model_calls for key in call}
    assert {"drop_path_rate", "avg_down"} <= passed
    assert passed.isdisjoint({"image_size", "hidden_size", "depthz"})
    with torch.no_grad():
        (fmap,) = model.eval()(torch.randn(1, 3, 32, 32)).feature_maps
    assert tuple(fmap.shape) == (1, model.channels[0], 1, 1)
    data = config.to_dict()
    assert (data["image_size"], data["hidden_size"], data["depthz"]) == (32, 8, 3)
    assert TimmBackboneConfig.from_dict(data) == config


def test_backbone_kwargs_entries_are_passed(create_model_calls: list[dict[str, Any]]) -> None:
    config = TimmBackboneConfig(backbone="test_resnet", backbone_kwargs={"drop_rate": 0.2, "stem_width": 24})
    assert config.timm_kwargs == {"drop_rate": 0.2, "stem_width": 24}
    model = TimmBackbone(config)
    builds = [call for call in create_model_calls if "in_chans" in call]  # not the argument-listing probe
    assert builds and all(call["stem_width"] == 24 and call["drop_rate"] == 0.2 for call in builds)
    assert model._backbone.conv1[0].out_channels == 24  # test_resnet's own stem width is 16
    with pytest.raises(ConfigError, match=r"backbone_kwargs cannot set \['in_chans'\]: set the config fields"):
        TimmBackboneConfig(backbone="test_resnet", backbone_kwargs={"in_chans": 1})


def test_transformers_config_with_foreign_keys_builds_in_both() -> None:
    data = transformers.TimmBackboneConfig(backbone="test_resnet", image_size=32, hidden_size=8).to_dict()
    theirs = transformers.TimmBackbone(transformers.TimmBackboneConfig.from_dict(data))
    ours = TimmBackbone(TimmBackboneConfig.from_dict(data))
    assert ours.stage_names == list(theirs.stage_names) == STAGES
    assert (ours.out_features, ours.out_indices) == (list(theirs.out_features), list(theirs.out_indices))


# -- (b) no backbone ------------------------------------------------------------------------------------------


def test_config_without_backbone_constructs_and_fails_only_when_built() -> None:
    config = TimmBackboneConfig()
    theirs = transformers.TimmBackboneConfig()
    assert config.backbone is None and config.out_indices == theirs.out_indices == [-1]
    data = config.to_dict()
    assert (data["out_features"], data["out_indices"], "stage_names" in data) == (None, [-1], False)
    assert TimmBackboneConfig.from_dict(data).to_dict() == data
    with pytest.raises(ConfigError, match=r"out_features of a TimmBackboneConfig without a backbone is not known"):
        config.out_features  # noqa: B018
    with pytest.raises(ConfigError, match=r"TimmBackboneConfig.backbone is not set, so the timm model .* set it"):
        TimmBackbone(config)
    config.backbone = "test_resnet"
    assert (config.out_features, config.out_indices) == (["layer4"], [-1])


def test_selection_without_backbone_is_checked_when_it_is_set() -> None:
    config = TimmBackboneConfig(out_features=["layer2", "layer3"])
    config.backbone = "test_resnet"
    assert config.out_indices == [2, 3]
    config = TimmBackboneConfig(out_indices=(7,))
    with pytest.raises(ValueError, match=r"out_indices \[7\] has indices \[7\] outside the 5 stages"):
        config.backbone = "test_resnet"
    assert config.backbone is None, "the refused change is rolled back"


# -- (c) out_indices default ----------------------------------------------------------------------------------


def test_default_out_indices_is_minus_one_as_in_transformers() -> None:
    ours = TimmBackboneConfig(backbone="test_resnet")
    theirs = transformers.TimmBackbone(transformers.TimmBackboneConfig(backbone="test_resnet"))
    assert (ours.out_features, ours.out_indices) == (list(theirs.out_features), list(theirs.out_indices))
    assert ours.out_indices == [-1]
    assert TimmBackboneConfig(backbone="test_resnet", out_features=["layer4"]).out_indices == [-1]
    assert TimmBackboneConfig(backbone="test_resnet", out_indices=[4]).out_indices == [4], "a choice is kept"


def test_transformers_checkpoint_without_out_indices_gets_minus_one(tmp_path: Path) -> None:
    config = transformers.TimmBackboneConfig(backbone="test_resnet", out_indices=[1, 4])
    reference = randomize_weights_(transformers.TimmBackbone(config)).eval()
    reference.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    assert data["out_indices"] == [1, 4]
    del data["out_indices"], data["out_features"]
    path.write_text(json.dumps(data))
    ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.clean, str(report)
    assert (ours.out_features, ours.out_indices) == (["layer4"], [-1])
    assert transformers.TimmBackboneConfig.from_dict(data).out_indices == [-1]
    # Saved out_features without out_indices (the last stage) read back as transformers' default too.
    data["out_features"] = ["layer4"]
    assert TimmBackboneConfig.from_dict(data).out_indices == [-1]


# -- (d) stage_names assignment -------------------------------------------------------------------------------


def test_stage_names_can_be_assigned_as_transformers_code_does() -> None:
    model = TimmBackbone(TimmBackboneConfig(backbone="test_resnet", out_indices=[2]))
    model.config.stage_names = model.stage_names  # what transformers' TimmBackbone.__init__ does
    model.config.stage_names = None
    assert model.config.stage_names == STAGES and model.out_indices == [2]
    with pytest.raises(ValueError, match=r"stage_names of a TimmBackboneConfig follow from its architecture fields"):
        model.config.stage_names = ["a", "b"]
    assert TimmBackboneConfig(backbone="test_resnet", stage_names=STAGES).stage_names == STAGES
    # transformers refuses contradicting names when it builds the model; ours when the config is built.
    with pytest.raises(ValueError, match="doesn't match `stage_names`"):
        transformers.TimmBackbone(transformers.TimmBackboneConfig(backbone="test_resnet", stage_names=["a", "b"]))
    with pytest.raises(ValueError, match=r"cannot set them to \['a', 'b'\]"):
        TimmBackboneConfig(backbone="test_resnet", stage_names=["a", "b"])
    unset = TimmBackboneConfig()
    unset.stage_names = ["a", "b"]  # no model yet: nothing to check, as in transformers
    unset.stage_names = None


def test_backbone_type_is_timm() -> None:
    model = TimmBackbone(TimmBackboneConfig(backbone="test_resnet"))
    theirs = transformers.TimmBackbone(transformers.TimmBackboneConfig(backbone="test_resnet"))
    assert model.backbone_type is BackboneType.TIMM and model.backbone_type == theirs.backbone_type.value
