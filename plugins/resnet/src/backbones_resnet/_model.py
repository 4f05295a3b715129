"""ResNet backbone. Paper: Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``ResNetBackbone``
state dict (``embedder.embedder.convolution.weight``, ``encoder.stages.0.layers.0.layer.1.normalization.bias``,
...), so its checkpoints load unchanged and ours load into it. The modules are the public blocks of
:mod:`backbones_resnet.blocks`.
"""

from __future__ import annotations

from torch import nn

from backbones.validation import DilatedStage

from ._config import ResNetConfig
from .blocks import ConvNormLayer, ResidualBlock, ResNetLayoutBackbone, projection_shortcut, residual_layer

__all__ = ["ResNetBackbone"]


class ResNetBackbone(ResNetLayoutBackbone):
    """ResNet feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the max-pooled stem output; stage ``i`` is the output of residual stage ``i``.
    A forward runs only up to the deepest requested stage (all stages when hidden states are requested).

    With the default configuration (ResNet-50) the four stages are 256, 512, 1024 and 2048 channels wide, at
    strides 4, 8, 16 and 32.
    """

    config_class = ResNetConfig
    input_model_name = "ResNet"

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__(config)
        self._build_trunk(ConvNormLayer(config.num_channels, config.embedding_size, 7, 2, activation=config.hidden_act))

    def _stage_blocks(self, in_channels: int, out_channels: int, depth: int, plan: DilatedStage) -> list[nn.Module]:
        return [
            self._make_block(out_channels if block else in_channels, out_channels, plan, block)
            for block in range(depth)
        ]

    def _make_block(self, in_channels: int, out_channels: int, plan: DilatedStage, index: int) -> ResidualBlock:
        """Block ``index`` of a stage planned by ``plan``, of ``self.config``'s layer type (the activations
        inside stay ReLU; transformers applies ``hidden_act`` to the block output only). The first block
        carries the stride, and its first 3x3 convolution the previous stage's dilation (timm's rule)."""
        config = self.config
        layer = residual_layer(config, in_channels, out_channels, plan, first=index == 0)
        shortcut = projection_shortcut(in_channels, out_channels, plan.stride if index == 0 else 1)
        return ResidualBlock(layer, shortcut, config.hidden_act)
