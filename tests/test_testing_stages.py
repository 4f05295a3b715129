"""backbones.testing.stages: the check that a forward runs only the stages it needs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from backbones.testing.stages import assert_runs_up_to_deepest_selected_stage


class _Chain(nn.Module):
    """Three stages; runs up to the deepest selected one, or all of them when ``early_exit`` is off."""

    def __init__(self, out_positions: list[int], *, early_exit: bool = True) -> None:
        super().__init__()
        self.stages = nn.ModuleList(nn.Identity() for _ in range(3))
        self.out_positions = out_positions
        self.early_exit = early_exit

    def forward(self, pixels: torch.Tensor, output_hidden_states: bool = False) -> Any:
        last = max(self.out_positions) if self.early_exit and not output_hidden_states else len(self.stages)
        for stage in list(self.stages)[:last]:
            pixels = stage(pixels)
        return pixels


def test_a_model_that_stops_early_passes_and_its_hooks_are_removed() -> None:
    model = _Chain([0, 2])
    assert_runs_up_to_deepest_selected_stage(model, model.stages, torch.zeros(1))  # type: ignore[arg-type]
    assert all(not stage._forward_hooks for stage in model.stages)


def test_a_model_that_runs_every_stage_fails_with_the_stages_named() -> None:
    model = _Chain([1], early_exit=False)
    with pytest.raises(AssertionError, match=r"stages \[1, 2, 3\] ran for a selection whose deepest stage is 1; "):
        assert_runs_up_to_deepest_selected_stage(model, model.stages, torch.zeros(1))  # type: ignore[arg-type]
    assert all(not stage._forward_hooks for stage in model.stages)
