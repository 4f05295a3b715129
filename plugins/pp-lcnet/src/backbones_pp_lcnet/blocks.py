"""Building blocks the three PP-LCNet versions share, public for plugins built on them.

Attribute names are transformers' checkpoint key names (``convolution``, ``normalization``, ``lab``,
``conv_symmetric``, ...). Every block that holds a Conv→BatchNorm pair or parallel branches implements
:class:`backbones.reparam.Reparameterizable`: ``reparameterize()`` folds it, in place, into single
convolutions for inference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import ConvNormActivation, FrozenBatchNorm2d, LearnableAffine
from backbones.reparam import branch_kernel, conv_from_kernel

from ._config import Stride

__all__ = [
    "ActivationAffine",
    "ConvNormLayer",
    "LearnableAffine",
    "LearnableRepLayer",
    "SqueezeExcitation",
]


class ActivationAffine(nn.Module):
    """An activation followed by a :class:`LearnableAffine` (keys ``lab.scale``, ``lab.bias``; buffers
    rather than parameters with ``trainable=False``)."""

    def __init__(self, activation: str, trainable: bool = True) -> None:
        super().__init__()
        self.act = make_activation(activation)
        self.lab = LearnableAffine(trainable)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.lab(self.act(hidden))


class ConvNormLayer(ConvNormActivation):
    """Convolution (no bias), BatchNorm, then optionally an activation and a learnable affine.

    :meth:`reparameterize` (from :class:`backbones.layers.ConvNormActivation`) folds the BatchNorm into the
    convolution, which gains a bias; the affine follows the activation, so it stays.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: An int or a ``(height, width)`` pair.
        groups: Convolution groups.
        activation: Activation name, or ``None`` for none.
        padding: Zero padding on each side (default ``kernel_size // 2``).
        affine: Add a learnable affine after the activation (only where there is an activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: Stride = 1,
        *,
        groups: int = 1,
        activation: str | None = None,
        padding: int | None = None,
        affine: bool = False,
    ) -> None:
        # In place: the activation's input is the norm's (or, folded, the convolution's) fresh output.
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,  # type: ignore[arg-type]
            padding=padding,
            groups=groups,
            activation=activation,
            affine=affine,
        )


def _branch(layer: ConvNormLayer, kernel_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """A conv-BN branch as a kernel and bias (its BatchNorm may already be folded into the convolution)."""
    norm = layer.normalization
    return branch_kernel(
        layer.convolution,
        norm if isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d)) else None,
        kernel_size=kernel_size,
    )


class LearnableRepLayer(nn.Module):
    """PP-LCNetV3's reparameterisable convolution: parallel branches summed, a learnable affine, then
    (unless the stride is 2) the activation and a second learnable affine.

    The branches are ``num_branches`` ``k x k`` conv-BN (``conv_symmetric``), a 1x1 conv-BN for ``k > 1``
    (``conv_small_symmetric``), and a BatchNorm of the input (``identity``) where the layer keeps the
    input's shape (stride 1, as many output as input channels). All of them and the first affine are
    linear, so :meth:`reparameterize` folds them into one ``k x k`` convolution.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square, odd kernel size of the main branches.
        stride: An int or a ``(height, width)`` pair (compared as transformers does: the identity branch
            exists for the int 1 only, the activation is skipped for the int 2 only).
        num_branches: Number of ``k x k`` branches.
        activation: Activation name.
        groups: Convolution groups (``in_channels`` for a depthwise layer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: Stride,
        num_branches: int,
        activation: str,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        self.in_channels = in_channels
        self.activated = stride != 2
        self.identity: nn.Module | None = (
            nn.BatchNorm2d(in_channels) if out_channels == in_channels and stride == 1 else None
        )
        self.conv_symmetric = nn.ModuleList(
            ConvNormLayer(in_channels, out_channels, kernel_size, stride, groups=groups) for _ in range(num_branches)
        )
        self.conv_small_symmetric = (
            ConvNormLayer(in_channels, out_channels, 1, stride, groups=groups) if kernel_size > 1 else None
        )
        self.lab = LearnableAffine()
        # A stride-2 layer has the activation's affine in its checkpoint but never runs it: kept, not trained.
        self.act = ActivationAffine(activation, trainable=self.activated)
        self.folded: nn.Conv2d | None = None

    def forward(self, hidden: Tensor) -> Tensor:
        if self.folded is not None:
            out = self.folded(hidden)
        else:
            # Summed in transformers' order (identity, 1x1, k x k branches): float sums depend on it.
            total: Tensor | None = self.identity(hidden) if self.identity is not None else None
            if self.conv_small_symmetric is not None:
                branch = self.conv_small_symmetric(hidden)
                total = branch if total is None else total + branch
            for conv in self.conv_symmetric:
                branch = conv(hidden)
                total = branch if total is None else total + branch
            assert total is not None  # conv_symmetric is never empty (PPLCNetV3Config checks it)
            out = self.lab(total)
        if self.activated:
            out = self.act(out)
        return out

    def reparameterize(self) -> None:
        """Fold every branch and the first learnable affine into one ``k x k`` convolution (``folded``)."""
        if self.folded is not None:
            return
        size = (self.kernel_size, self.kernel_size)
        parts = [_branch(layer, size) for layer in self.conv_symmetric]  # type: ignore[arg-type]
        if self.conv_small_symmetric is not None:
            parts.append(_branch(self.conv_small_symmetric, size))
        if self.identity is not None:
            norm = self.identity
            assert isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d))
            parts.append(branch_kernel(None, norm, kernel_size=size, channels=self.in_channels, groups=self.groups))
        weight = torch.stack([part[0] for part in parts]).sum(0)
        bias = torch.stack([part[1] for part in parts]).sum(0)
        scale, shift = self.lab.scale.detach(), self.lab.bias.detach()
        template = self.conv_symmetric[0].convolution
        assert isinstance(template, nn.Conv2d)
        self.folded = conv_from_kernel(template, weight * scale, bias * scale + shift)
        # The forward reads only `folded` from now on.
        del self.conv_symmetric, self.conv_small_symmetric, self.identity, self.lab


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation: global average, 1x1 conv (``channels // reduction``), ReLU, 1x1 conv, hard-sigmoid,
    times the input (keys ``convolutions.0``, ``convolutions.2``)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        squeezed = channels // reduction
        self.convolutions = nn.ModuleList(
            [
                nn.Conv2d(channels, squeezed, 1),
                nn.ReLU(),
                nn.Conv2d(squeezed, channels, 1),
                nn.Hardsigmoid(),
            ]
        )

    def forward(self, hidden: Tensor) -> Tensor:
        weights = hidden.mean((2, 3), keepdim=True)
        for layer in self.convolutions:
            weights = layer(weights)
        return hidden * weights
