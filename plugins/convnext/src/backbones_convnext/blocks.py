"""Public building blocks of ConvNeXt: the channels-first layer norm, the block, the stem, stages and the
encoder, for plugins that build on ConvNeXt (backbones-convnextv2, DINOv3-ConvNeXt, ...).

Paper: Liu et al., "A ConvNet for the 2020s" (2022), https://arxiv.org/abs/2201.03545.

Every name in ``__all__`` is part of backbones-convnext's public API and follows the versioning rule of
docs/plugins.md ("Building on another plugin's blocks"): a dependent plugin pins ``backbones-convnext>=0.1,<0.2``.
Attribute names are checkpoint key names in transformers' ConvNeXt format (``patch_embeddings``,
``downsampling_layer.1``, ``layers.N.dwconv``, ``pwconv1``, ``layer_scale_parameter``, ...).

Layout: maps are ``(batch, channels, height, width)`` tensors in the channels-last memory format (from the stem's
norm on); a block's pointwise layers run on their ``(batch, height, width, channels)`` permuted views.

Extension point: :meth:`ConvNextBlock._activate` (the expanded features between the pointwise layers; ConvNeXt
V2 adds Global Response Normalisation there).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, StageList, drop_path, linear

__all__ = [
    "NORM_EPS",
    "ChannelsFirstLayerNorm",
    "ConvNextBlock",
    "ConvNextEmbeddings",
    "ConvNextEncoder",
    "ConvNextStage",
    "SamePaddedConv2d",
]

NORM_EPS = 1e-6
"""Epsilon of every norm of transformers' ConvNeXt trunk and of its output norms, whatever the config says."""


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of ``(batch, channels, height, width)`` maps.

    For a channels-last map the permuted view is contiguous, so the norm reads and writes it in place
    of a transposed copy; its output is channels-last whatever the input was. Arguments are ``nn.LayerNorm``'s
    (``normalized_shape`` is the channel count).
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` to the normalised ``(B, C, H, W)`` (channels-last memory)."""
        normed = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)


class ConvNextBlock(CheckpointableLayer):
    """One ConvNeXt block: ``x + scale * pwconv2(act(pwconv1(norm(dwconv(x)))))``; the unit of gradient
    checkpointing.

    ``dwconv`` is a 7x7 depthwise convolution; the norm and the two pointwise layers (4x expansion,
    ``nn.Linear`` as in transformers' keys) act on channels-last views.

    Args:
        dim: Channels in and out.
        hidden_act: Name of the activation between the pointwise layers.
        layer_scale_init_value: Initial per-channel scale of the branch; ``<= 0`` means no scale (and no
            ``layer_scale_parameter`` key).
        drop_path_rate: Stochastic-depth rate of the branch (training only).
        layer_norm_eps: Epsilon of the block's norm (transformers' ConvNeXt: always ``1e-6``).
        dilation: Dilation of the depthwise convolution (a stage past ``output_stride``).
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_act: str,
        layer_scale_init_value: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_eps: float = NORM_EPS,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3 * dilation, dilation=dilation, groups=dim)
        self.layernorm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = make_activation(hidden_act)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_parameter = (
            nn.Parameter(torch.full((dim,), layer_scale_init_value)) if layer_scale_init_value > 0 else None
        )
        self.drop_path_rate = drop_path_rate

    def _activate(self, expanded: Tensor) -> Tensor:
        """The expanded ``(B, H, W, 4 * dim)`` features between the pointwise layers; a hook for variants."""
        return self.act(expanded)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim, H, W)`` to ``(B, dim, H, W)``."""
        branch = self.layernorm(self.dwconv(x).permute(0, 2, 3, 1))
        if type(self)._activate is ConvNextBlock._activate:  # the activation alone: fused with pwconv1
            expanded = linear(branch, self.pwconv1, self.act)
        else:
            expanded = self._activate(linear(branch, self.pwconv1))
        branch = linear(expanded, self.pwconv2)
        scale = self.layer_scale_parameter
        if self.drop_path_rate and self.training:
            if scale is not None:
                branch = branch * scale
            return x + drop_path(branch.permute(0, 3, 1, 2), self.drop_path_rate, True)
        if scale is None:
            # In place: ``branch`` is the fresh output of pwconv2, which no backward pass reads.
            return branch.permute(0, 3, 1, 2).add_(x)
        # One fused pass for scale and residual instead of a multiply and an add. It runs on the
        # (B, H, W, C) views, where the scale broadcasts along the last axis: a (C, 1, 1) scale against the
        # (B, C, H, W) view makes the output-layout logic compare its strides with symbolic ones, a guard
        # that torch.export with dynamic height and width cannot prove.
        return torch.addcmul(x.permute(0, 2, 3, 1), branch, scale).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"drop_path_rate={self.drop_path_rate}" if self.drop_path_rate else ""


class ConvNextEmbeddings(nn.Module):
    """Stem (keys ``patch_embeddings``, ``layernorm``): non-overlapping patches projected, then normalised.

    Args:
        num_channels: Input channels.
        width: Output channels (the first stage's width).
        patch_size: Side of the square patches (the stem's stride).
        layer_norm_eps: Epsilon of the norm.
    """

    def __init__(self, num_channels: int, width: int, patch_size: int, *, layer_norm_eps: float = NORM_EPS) -> None:
        super().__init__()
        self.patch_embeddings = nn.Conv2d(num_channels, width, kernel_size=patch_size, stride=patch_size)
        self.layernorm = ChannelsFirstLayerNorm(width, eps=layer_norm_eps)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, num_channels, H, W)`` to ``(B, width, H / patch_size, W / patch_size)`` (channels-last memory)."""
        return self.layernorm(self.patch_embeddings(pixel_values))


class SamePaddedConv2d(nn.Conv2d):
    """A stride-1 convolution zero-padded to keep the map's size, the odd pixel of padding (an even
    ``dilation * (kernel_size - 1)`` has none) at the bottom and right: the 2x2 "downsampling" convolution
    of a stage past ``output_stride``, as timm pads it. Arguments are ``nn.Conv2d``'s, without ``padding``
    and ``stride``; the keys are ``nn.Conv2d``'s.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        total = dilation * (kernel_size - 1)
        self.same_padding = (total // 2, total - total // 2) * 2

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)``."""
        return super().forward(F.pad(x, self.same_padding))


class ConvNextStage(nn.Module):
    """Optional downsampling (key ``downsampling_layer``: norm, then a 2x2 stride-2 convolution), then a run of
    blocks (key ``layers``).

    Args:
        in_channels: Channels of the stage input.
        out_channels: Channels of the blocks (the downsampling convolution maps ``in_channels`` to them).
        blocks: The stage's blocks, in order.
        downsample: Whether the stage starts with the downsampling layer (ConvNeXt: every stage but the first).
        layer_norm_eps: Epsilon of the downsampling layer's norm.
        dilated: Whether ``output_stride`` replaced the stage's stride by dilation: the downsampling
            convolution then has stride 1, ``first_dilation`` and a padding keeping the size
            (:class:`SamePaddedConv2d`), as timm's ConvNeXt with ``output_stride``.
        first_dilation: Dilation of that convolution (the previous stage's dilation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: Iterable[nn.Module],
        downsample: bool,
        *,
        layer_norm_eps: float = NORM_EPS,
        dilated: bool = False,
        first_dilation: int = 1,
    ) -> None:
        super().__init__()
        conv = (
            SamePaddedConv2d(in_channels, out_channels, 2, dilation=first_dilation)
            if dilated
            else nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2)
        )
        # transformers keeps an empty list in the first stage; None gives the same (absent) keys.
        self.downsampling_layer = (
            nn.Sequential(ChannelsFirstLayerNorm(in_channels, eps=layer_norm_eps), conv) if downsample else None
        )
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """The downsampling layer (if any), then the blocks."""
        if self.downsampling_layer is not None:
            x = self.downsampling_layer(x)
        return self.layers(x)


class ConvNextEncoder(StageList):
    """ConvNeXt's stages under the key ``stages``; the backbone runs them (pruning shortens the list): a
    :class:`backbones.layers.StageList`.

    Args:
        stages: The stages, shallowest first.
    """
