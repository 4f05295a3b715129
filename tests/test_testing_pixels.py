"""The kit's seeded random inputs: pixel tensors for models and PIL images for image processors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backbones.testing import random_image, random_pixels


def test_random_pixels_are_seeded_and_leave_the_global_generator_alone() -> None:
    torch.manual_seed(3)
    expected_next = torch.rand(1)
    torch.manual_seed(3)
    pixels = random_pixels(5, 7, batch=3, channels=4)
    assert pixels.shape == (3, 4, 5, 7) and pixels.dtype == torch.float32
    assert torch.equal(pixels, random_pixels(5, 7, batch=3, channels=4))
    assert not torch.equal(pixels, random_pixels(5, 7, batch=3, channels=4, seed=8))
    assert torch.equal(torch.rand(1), expected_next)


@pytest.mark.parametrize(
    ("mode", "shape"), [("RGB", (9, 11, 3)), ("RGBA", (9, 11, 4)), ("LA", (9, 11, 2)), ("L", (9, 11))]
)
def test_random_image_has_the_mode_size_and_seeded_pixels(mode: str, shape: tuple[int, ...]) -> None:
    image = random_image(9, 11, seed=5, mode=mode)
    assert image.mode == mode and image.size == (11, 9)
    expected = np.random.default_rng(5).integers(0, 256, size=shape, dtype=np.uint8)
    assert np.array_equal(np.asarray(image), expected)
    assert not np.array_equal(np.asarray(random_image(9, 11, seed=6, mode=mode)), expected)


def test_random_image_refuses_another_mode() -> None:
    with pytest.raises(ValueError, match=r"^mode 'CMYK' is not one of \['L', 'LA', 'RGB', 'RGBA'\]; convert"):
        random_image(4, 4, mode="CMYK")
