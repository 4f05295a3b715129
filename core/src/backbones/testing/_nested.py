"""A backbone inside a larger saved model (a detector's, an OCR model's), loaded by its prefix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import AutoBackbone, Backbone, LoadReport
from ._parity import assert_parity

__all__ = ["assert_nested_checkpoint"]


def assert_nested_checkpoint(
    directory: Path,
    trunk: nn.Module,
    prefix: str,
    *,
    backbone_class: type[Backbone],
    out_indices: Sequence[int],
    input_sizes: Iterable[tuple[int, int]],
    min_unused: int,
    missing_counters: bool = False,
    config_key: str = "backbone_config",
    loader: Any = AutoBackbone,
    tolerance: float = 1e-4,
) -> tuple[Backbone, LoadReport]:
    """Load our backbone from a saved model that holds it under ``prefix``, and check it is that sub-model.

    ``loader.from_pretrained(directory, checkpoint_prefix=prefix, config_key=config_key,
    output_loading_info=True)`` must build exactly ``backbone_class`` selecting ``out_indices`` (the selection
    saved under ``config_key``), report as unused exactly the saved keys outside ``prefix`` (more than
    ``min_unused`` of them: the rest of the model), and give the same maps as ``trunk`` (by
    :func:`~backbones.testing.assert_parity`) on random images of each of ``input_sizes``.

    Args:
        directory: The saved model (``config.json`` and ``model.safetensors``).
        trunk: The saved model's sub-model that our backbone mirrors, in eval mode.
        prefix: The key prefix of the backbone's weights in the checkpoint.
        backbone_class: The class that must be built.
        out_indices: The selection it must have.
        input_sizes: ``(height, width)`` of the compared images (batch 1).
        min_unused: The least number of keys outside ``prefix``.
        missing_counters: The saved model froze its BatchNorm (which then has no ``num_batches_tracked``): the
            report's missing keys are exactly our models' counters, one at least. Otherwise nothing is missing.
        config_key: The key of the backbone's config in the saved ``config.json``.
        loader: What loads it: :class:`~backbones.AutoBackbone` or a backbone class.
        tolerance: Bound of :func:`~backbones.testing.assert_parity`.

    Returns:
        Our model and its load report, for checks of the caller's own.
    """
    from safetensors import safe_open

    model, report = loader.from_pretrained(
        directory, checkpoint_prefix=prefix, config_key=config_key, output_loading_info=True
    )
    assert type(model) is backbone_class, type(model)
    assert model.out_indices == list(out_indices)
    counters = sorted(key for key in model.state_dict() if key.endswith("num_batches_tracked"))
    assert report.missing_keys == (counters if missing_counters else [])
    assert counters or not missing_counters, "missing_counters is set but the model has no BatchNorm counters"
    with safe_open(directory / "model.safetensors", "pt") as handle:
        saved = list(handle.keys())
    outside = sorted(key for key in saved if not key.startswith(prefix))
    assert report.unused_keys == outside
    assert len(outside) > min_unused, f"{len(outside)} keys outside {prefix!r}"
    for height, width in input_sizes:
        pixels = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            assert_parity(model(pixels).feature_maps, trunk(pixels).feature_maps, tolerance)
    return model, report
