"""Seeded random images for plugins' tests: pixel tensors for models, PIL images for processors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["random_image", "random_pixels"]


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


def random_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A PIL image of uniformly random 8-bit pixels, for image-processor tests (needs Pillow and NumPy).

    The pixels are ``numpy.random.default_rng(seed).integers(0, 256, (height, width, bands), dtype=uint8)``:
    the same arguments give the same image.

    Args:
        height: Image height, in pixels.
        width: Image width, in pixels.
        seed: Seed of the generator.
        mode: ``"RGB"``, ``"RGBA"``, ``"LA"`` or ``"L"`` (one band: an ``(height, width)`` array).

    Returns:
        The image, ``width`` x ``height`` in PIL's terms (``image.size == (width, height)``).

    Raises:
        ValueError: ``mode`` is not one of those.
    """
    import numpy as np
    from PIL import Image

    bands = {"RGB": (3,), "RGBA": (4,), "LA": (2,), "L": ()}
    if mode not in bands:
        raise ValueError(f"mode {mode!r} is not one of {sorted(bands)}; convert the image afterwards for others")
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, *bands[mode]), dtype=np.uint8)
    return Image.fromarray(pixels)  # Pillow reads the mode from the bands: L, LA, RGB or RGBA
