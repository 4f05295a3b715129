"""Public building blocks of HGNetV2, for plugins that build on it (PP-LCNetV4's large stem is HGNet's stem).

Papers: D-FINE, https://arxiv.org/abs/2410.13842 (which trains on HGNetV2); the HGNet family comes from
PaddlePaddle's PP-HGNet (https://github.com/PaddlePaddle/PaddleClas).

Every name in ``__all__`` is part of backbones-hgnet-v2's public API and follows the versioning rule of
docs/plugins.md ("Building on another plugin's blocks"): a dependent plugin pins ``backbones-hgnet-v2>=0.1,<0.2``.
Attribute names are checkpoint key names in transformers' format (``stem1.convolution``, ``stem2a.lab.scale``, ...).

Layout: ``(batch, channels, height, width)`` maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.layers import ConvNormActivation

__all__ = ["HGNetStem"]


class HGNetStem(nn.Module):
    """HGNet's stem: ``stem1`` (3x3), then two branches of its right/bottom-padded output concatenated (a
    stride-1 2x2 max-pool, ``pool``, and ``stem2a`` -> pad -> ``stem2b``, two 2x2 convolutions), then
    ``stem3`` (3x3) and ``stem4`` (1x1). Each convolution is a :class:`backbones.layers.ConvNormActivation`
    padded by ``(kernel_size - 1) // 2``, with the activation (and the optional learnable affine).

    On CPU the stem runs in the channels-last memory format and returns its output in the input's layout.

    Args:
        in_channels: Channels of the input images.
        mid_channels: Width inside the stem (``stem2a`` has half of it).
        out_channels: Output channels (``stem4``'s).
        strides: The strides of ``stem1``, ``stem2a``, ``stem2b``, ``stem3`` and ``stem4``: ints or
            ``(height, width)`` pairs; the stem's stride is the product of the first, fourth and fifth.
        activation: Name of the activation after every norm (a key of
            :data:`backbones.activations.ACTIVATIONS`).
        affine: Follow every activation by a :class:`backbones.layers.LearnableAffine` (key ``lab``).

    Example:
        >>> stem = HGNetStem(3, 32, 48, [2, 1, 1, 2, 1], "relu")  # doctest: +SKIP
        >>> stem(torch.randn(1, 3, 64, 64)).shape  # doctest: +SKIP
        torch.Size([1, 48, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        strides: Sequence[int | tuple[int, int]],
        activation: str,
        affine: bool = False,
    ) -> None:
        super().__init__()

        def unit(unit_in: int, unit_out: int, kernel_size: int, stride: int | tuple[int, int]) -> ConvNormActivation:
            padding = (kernel_size - 1) // 2
            return ConvNormActivation(
                unit_in, unit_out, kernel_size, stride, padding=padding, activation=activation, affine=affine
            )

        self.stem1 = unit(in_channels, mid_channels, 3, strides[0])
        self.stem2a = unit(mid_channels, mid_channels // 2, 2, strides[1])
        self.stem2b = unit(mid_channels // 2, mid_channels, 2, strides[2])
        self.stem3 = unit(mid_channels * 2, mid_channels, 3, strides[3])
        self.stem4 = unit(mid_channels, out_channels, 1, strides[4])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` pixels to the ``(B, out_channels, H', W')`` stem map."""
        if pixel_values.device.type != "cpu" or pixel_values.is_contiguous(memory_format=torch.channels_last):
            return self._stem(pixel_values)
        # PyTorch's CPU max-pool is about 5x slower on NCHW maps than on channels_last ones, and the stem's
        # small convolutions are faster channels_last too (HGNetV2-B4's stem at batch 8, one thread: 277 ms
        # NCHW, 122 ms channels_last, 40% of the whole forward), so the stem runs channels_last and only its
        # output returns to the input's layout.
        return self._stem(pixel_values.contiguous(memory_format=torch.channels_last)).contiguous()

    def _stem(self, pixel_values: Tensor) -> Tensor:
        # One pixel of zero padding right and bottom keeps the 2x2 windows at the input's size.
        hidden = F.pad(self.stem1(pixel_values), (0, 1, 0, 1))
        branch = self.stem2b(F.pad(self.stem2a(hidden), (0, 1, 0, 1)))
        hidden = torch.cat([self.pool(hidden), branch], dim=1)
        return self.stem4(self.stem3(hidden))
