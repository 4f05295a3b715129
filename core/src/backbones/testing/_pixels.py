"""Seeded random images for plugins' tests."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["random_pixels"]


def random_pixels(height: int, width: int, batch: int = 2, seed: int = 7, channels: int = 3) -> Tensor:
    """A batch of standard-normal images drawn from their own generator (the global RNG is left alone).

    Args:
        height: Image height, in pixels.
        width: Image width, in pixels.
        batch: Number of images.
        seed: Seed of the generator: the same arguments give the same images.
        channels: Channels per image.

    Returns:
        A float32 tensor of shape ``(batch, channels, height, width)``.
    """
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
