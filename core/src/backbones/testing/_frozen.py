"""A BatchNorm checkpoint loaded with frozen norms, checked both ways against its transformers oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import AutoBackbone, Backbone
from ..layers import FrozenBatchNorm2d
from ._parity import assert_parity, load_reference

__all__ = ["assert_frozen_norm_round_trip"]


def assert_frozen_norm_round_trip(
    directory: Path,
    reference: nn.Module,
    reference_backbone_class: str,
    pixels: Tensor,
    *,
    tolerance: float = 1e-4,
    **options: Any,
) -> Backbone:
    """Assert ``freeze_norm=True`` loads a BatchNorm checkpoint into frozen norms, and back into transformers.

    ``AutoBackbone.from_pretrained(directory, freeze_norm=True, **options)`` must use every key (nothing missing
    or unused: the checkpoint loads into the BatchNorms, which are frozen after it), leave no BatchNorm that is
    not a :class:`~backbones.layers.FrozenBatchNorm2d`, and give ``reference``'s maps in training mode too (the
    loaded statistics hold). The checkpoint it then saves (to ``directory / "ours"``) must load into
    transformers' ``reference_backbone_class`` with only the BatchNorm counters missing (a frozen BatchNorm
    counts no batches), with the same maps again.

    Args:
        directory: The checkpoint ``reference`` saved.
        reference: transformers' backbone, in eval mode, selecting the stages the load selects.
        reference_backbone_class: Its class name.
        pixels: The compared images.
        tolerance: Bound of :func:`~backbones.testing.assert_parity`.
        **options: More load options (``out_indices``, ``freeze_at``, ...).

    Returns:
        Our model, in training mode, for checks of the caller's own.
    """
    model, report = AutoBackbone.from_pretrained(directory, freeze_norm=True, output_loading_info=True, **options)
    assert report.missing_keys == report.unused_keys == []
    norms = [module for module in model.modules() if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(isinstance(module, FrozenBatchNorm2d) for module in norms)
    model.train()
    with torch.no_grad():
        expected = reference(pixels).feature_maps
        assert_parity(model(pixels).feature_maps, expected, tolerance)
    model.save_pretrained(directory / "ours")
    counters = sorted(key for key in reference.state_dict() if key.endswith("num_batches_tracked"))
    back = load_reference(reference_backbone_class, directory / "ours", missing=counters)
    with torch.no_grad():
        assert_parity(back(pixels).feature_maps, expected, tolerance)
    return model
