"""RT-DETR's ResNet-vd backbone. Papers: DETRs Beat YOLOs on Real-time Object Detection (RT-DETR),
https://arxiv.org/abs/2304.08069; the "vd" tweaks (deep stem, average-pool shortcuts) are from Bag of Tricks
for Image Classification with Convolutional Neural Networks, https://arxiv.org/abs/1812.01187.

Built from backbones-resnet's public blocks; only the average-pool shortcut is ResNet-vd's own. Module
attribute names are the checkpoint's key names: they reproduce transformers' ``RTDetrResNetBackbone`` state
dict (``embedder.embedder.0.convolution.weight``, ``encoder.stages.1.layers.0.shortcut.1.normalization.bias``,
...), so its checkpoints load unchanged and ours load into it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from backbones.validation import DilatedStage
from backbones_resnet.blocks import (
    ConvNormLayer,
    ResidualBlock,
    ResNetLayoutBackbone,
    projection_shortcut,
    residual_layer,
)

from ._config import RTDetrResNetConfig

__all__ = ["RTDetrResNetBackbone"]


class _HalvingAvgPool(nn.Module):
    """A 2x2 stride-2 average-pool whose output is ``ceil(size / 2)``; an edge window that is cut off
    averages the pixels it has (what ``nn.AvgPool2d(2, 2, ceil_mode=True)`` computes).

    Replicating the last row and column, then pooling without ceil mode, gives the same values without the
    size test of ceil mode, which ``torch.export`` cannot prove for dynamic sizes.
    """

    def forward(self, hidden: Tensor) -> Tensor:
        return F.avg_pool2d(F.pad(hidden, (0, 1, 0, 1), mode="replicate"), 2, 2)


class _DilatedAvgPool(nn.Module):
    """The 2x2 average-pool of a shortcut in a dilated stage (``output_stride`` below 32): stride 1, the
    input zero-padded by one row and column at the bottom and right, the zeros counted (timm's
    ``AvgPool2dSame`` in its dilated ResNet-D shortcuts), so the map keeps its size."""

    def forward(self, hidden: Tensor) -> Tensor:
        return F.avg_pool2d(F.pad(hidden, (0, 1, 0, 1)), 2, 1)


def _pooled_projection(in_channels: int, out_channels: int, *, dilated: bool = False) -> nn.Sequential:
    """ResNet-vd's downsampling shortcut: a 2x2 stride-2 average-pool (stride 1 in a dilated stage), then a
    1x1 projection (keys ``1.convolution``, ``1.normalization``), instead of a strided 1x1 convolution that
    skips 3 of 4 pixels."""
    pool = _DilatedAvgPool() if dilated else _HalvingAvgPool()
    return nn.Sequential(pool, ConvNormLayer(in_channels, out_channels, 1, activation=None))


def _first_block(config: RTDetrResNetConfig, in_channels: int, out_channels: int, plan: DilatedStage) -> ResidualBlock:
    """The first block of a stage, the only one that may change width or resolution. In a dilated stage the
    stride is 1 and the shortcut's pool keeps the resolution (timm's ResNet-D rule)."""
    shortcut: nn.Module | None
    stride, dilated = plan.stride, plan.dilation > 1
    layer = residual_layer(config, in_channels, out_channels, plan, first=True)
    if config.layer_type == "basic":
        # RT-DETR's basic stages always project in their first block, even when nothing changes.
        if in_channels != out_channels:
            shortcut = _pooled_projection(in_channels, out_channels, dilated=dilated)
        else:
            shortcut = ConvNormLayer(in_channels, out_channels, 1, stride, activation=None)
    elif stride != 1 or dilated:
        shortcut = _pooled_projection(in_channels, out_channels, dilated=dilated)
    else:
        shortcut = projection_shortcut(in_channels, out_channels)
    return ResidualBlock(layer, shortcut, config.hidden_act)


def _later_block(config: RTDetrResNetConfig, channels: int, plan: DilatedStage) -> ResidualBlock:
    return ResidualBlock(residual_layer(config, channels, channels, plan, first=False), None, config.hidden_act)


def _deep_stem(config: RTDetrResNetConfig) -> nn.Sequential:
    """Three 3x3 conv-norm layers (stride 2, 1, 1) in place of ResNet's 7x7 one."""
    half, act = config.embedding_size // 2, config.hidden_act
    return nn.Sequential(
        ConvNormLayer(config.num_channels, half, 3, 2, activation=act),
        ConvNormLayer(half, half, 3, 1, activation=act),
        ConvNormLayer(half, config.embedding_size, 3, 1, activation=act),
    )


class RTDetrResNetBackbone(ResNetLayoutBackbone):
    """RT-DETR's ResNet-vd feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the max-pooled deep stem's output; stage ``i`` is the output of residual stage
    ``i``. A forward runs only up to the deepest requested stage (all stages when hidden states are
    requested). ``config.freeze_at`` / ``freeze_norm`` are applied when the model is built or loaded.

    With the default configuration (ResNet-50-vd) the four stages are 256, 512, 1024 and 2048 channels wide, at
    strides 4, 8, 16 and 32; RT-DETR reads stages 2, 3 and 4.
    """

    config_class = RTDetrResNetConfig
    input_model_name = "ResNet-vd"
    config: RTDetrResNetConfig

    def __init__(self, config: RTDetrResNetConfig) -> None:
        super().__init__(config)
        self._build_trunk(_deep_stem(config))

    def _stage_blocks(self, in_channels: int, out_channels: int, depth: int, plan: DilatedStage) -> list[nn.Module]:
        first = _first_block(self.config, in_channels, out_channels, plan)
        return [first, *(_later_block(self.config, out_channels, plan) for _ in range(depth - 1))]
