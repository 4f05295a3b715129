"""backbones.layers: stochastic depth (the checkpointing and BatchNorm layers are exercised by the kit)."""

from __future__ import annotations

import torch

from backbones.layers import drop_path


def test_drop_path_is_the_identity_outside_training_or_at_rate_zero() -> None:
    x = torch.randn(4, 3, 5, 5)
    assert drop_path(x, 0.3, training=False) is x
    assert drop_path(x, 0.0, training=True) is x


def test_drop_path_drops_whole_samples_and_rescales_the_rest() -> None:
    x = torch.rand(64, 3, 4, 4) + 1.0
    torch.manual_seed(0)
    out = drop_path(x, 0.25, training=True)
    torch.manual_seed(0)
    expected_kept = (torch.rand(64, 1, 1, 1) + 0.75).floor()
    torch.testing.assert_close(out, x / 0.75 * expected_kept, rtol=0, atol=0)
    kept = out.flatten(1).ne(0).all(dim=1)
    dropped = out.flatten(1).eq(0).all(dim=1)
    assert bool((kept | dropped).all()), "every sample is kept or dropped whole"
    assert 0 < int(dropped.sum()) < 64
