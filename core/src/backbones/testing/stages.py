"""Checks of which stages a backbone's forward runs, for plugins' tests (public: ``backbones.testing.stages``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .. import Backbone

__all__ = ["assert_runs_up_to_deepest_selected_stage"]


def assert_runs_up_to_deepest_selected_stage(
    model: Backbone, stages: Sequence[nn.Module], pixel_values: Tensor
) -> None:
    """Assert that a forward runs the stages only up to the deepest selected one, and every stage when hidden
    states are requested.

    Args:
        model: The backbone, in eval mode, with a selection that leaves deeper stages unselected.
        stages: The modules of stages ``1..N`` in order (the stem, stage 0, always runs and is not checked).
        pixel_values: An input the model takes.

    Raises:
        AssertionError: Naming the stages that ran and those expected.
    """
    deepest = max(model.out_positions)
    ran: list[int] = []
    handles = [
        stage.register_forward_hook(lambda *_, number=number: ran.append(number))
        for number, stage in enumerate(stages, start=1)
    ]
    try:
        with torch.no_grad():
            model(pixel_values)
            expected = list(range(1, deepest + 1))
            assert ran == expected, (
                f"stages {ran} ran for a selection whose deepest stage is {deepest}; expected {expected}"
            )
            ran.clear()
            model(pixel_values, output_hidden_states=True)
            expected = list(range(1, len(stages) + 1))
            assert ran == expected, f"stages {ran} ran with output_hidden_states=True; expected all of {expected}"
    finally:
        for handle in handles:
            handle.remove()
