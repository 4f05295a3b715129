"""Tests of the CNN helpers of the conformance kit (``backbones.testing.cnn``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

from backbones import Backbone
from backbones.testing import cnn
from backbones.testing.cnn import HeldBackbone, SavedModelsHoldingBackbone


def _holder() -> nn.Module:
    return nn.ModuleDict({"model": nn.ModuleDict({"backbone": nn.Linear(2, 2), "head": nn.Linear(2, 1)})})


class _Held(SavedModelsHoldingBackbone):
    backbone_class = Backbone
    models = {
        "frozen-norms": HeldBackbone(
            _holder, "model.backbone", "model.backbone.", [2, 3], ((64, 48),), 5, missing_counters=True
        ),
        "plain": HeldBackbone(_holder, "model.backbone", "model.backbone.", [1], ((32, 32), (50, 38)), 1),
    }


@pytest.mark.parametrize(("case", "missing_counters"), [("frozen-norms", True), ("plain", False)])
def test_held_backbone_passes_its_entry_to_the_nested_checkpoint_check(
    case: str, missing_counters: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    saved: list[tuple[nn.Module, Path]] = []
    checks: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def save(model: nn.Module, directory: Path) -> nn.Module:
        saved.append((model, directory))
        return model

    monkeypatch.setattr(cnn, "save_randomized", save)
    monkeypatch.setattr(cnn, "assert_nested_checkpoint", lambda *args, **kwargs: checks.append((args, kwargs)))
    _Held().test_saved_model_loads_with_prefix(case, tmp_path)
    held = _Held.models[case]
    ((model, directory),) = saved
    ((args, kwargs),) = checks
    assert directory == tmp_path
    assert args == (tmp_path, model.get_submodule("model.backbone"), "model.backbone.")
    assert kwargs == {
        "backbone_class": Backbone,
        "out_indices": held.out_indices,
        "input_sizes": held.input_sizes,
        "min_unused": held.min_unused,
        "missing_counters": missing_counters,
    }


def test_held_backbone_counts_norm_counters_by_default() -> None:
    assert HeldBackbone(_holder, "model", "model.", [0], ((8, 8),), 0).missing_counters is False
