"""ResNet backbone. Paper: Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``ResNetBackbone``
state dict (``embedder.embedder.convolution.weight``, ``encoder.stages.0.layers.0.layer.1.normalization.bias``,
...), so its checkpoints load unchanged and ours load into it. The modules are the public blocks of
:mod:`backbones_resnet.blocks`.
"""

from __future__ import annotations

from torch import nn

from backbones import Backbone
from backbones.layers import StemAndStages, init_conv_and_batch_norm_
from backbones.validation import DilatedStage

from ._config import ResNetConfig
from .blocks import (
    ConvNormLayer,
    ResidualBlock,
    ResNetEmbeddings,
    ResNetEncoder,
    ResNetStage,
    basic_layer,
    bottleneck_layer,
    projection_shortcut,
)

__all__ = ["ResNetBackbone"]


class ResNetBackbone(StemAndStages, Backbone):
    """ResNet feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the max-pooled stem output; stage ``i`` is the output of residual stage ``i``.
    A forward runs only up to the deepest requested stage (all stages when hidden states are requested).

    Args:
        config: The architecture and the output selection.

    Example:
        >>> model = ResNetBackbone(ResNetConfig(out_indices=[1, 2, 3, 4])).eval()  # doctest: +SKIP
        >>> [fmap.shape[1] for fmap in model(torch.randn(1, 3, 224, 224)).feature_maps]  # doctest: +SKIP
        [256, 512, 1024, 2048]
    """

    config_class = ResNetConfig
    lora_target_modules = ("convolution",)
    base_model_prefix = "resnet"  # prefix of the trunk in ResNetForImageClassification checkpoints
    has_attentions = False
    reference_class_name = "ResNetBackbone"
    input_model_name = "ResNet"
    config: ResNetConfig

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__(config)
        self.embedder = ResNetEmbeddings(
            ConvNormLayer(config.num_channels, config.embedding_size, 7, 2, activation=config.hidden_act)
        )
        channels = [config.embedding_size, *config.hidden_sizes]
        plans = config.stage_plans
        self.encoder = ResNetEncoder(
            ResNetStage(
                self._make_block(channels[index + 1] if block else channels[index], channels[index + 1], plan, block)
                for block in range(depth)
            )
            for index, (depth, plan) in enumerate(zip(config.depths, plans))
        )
        self.num_features = [config.embedding_size, *config.hidden_sizes]
        self.reductions = [4] + [plan.reduction for plan in plans]
        self.post_init()

    def _make_block(self, in_channels: int, out_channels: int, plan: DilatedStage, index: int) -> ResidualBlock:
        """Block ``index`` of a stage planned by ``plan``, of ``self.config``'s layer type (the activations
        inside stay ReLU; transformers applies ``hidden_act`` to the block output only). The first block
        carries the stride, and its first 3x3 convolution the previous stage's dilation (timm's rule)."""
        config = self.config
        stride = plan.stride if index == 0 else 1
        first_dilation = plan.first_dilation if index == 0 else plan.dilation
        if config.layer_type == "basic":
            layer = basic_layer(
                in_channels, out_channels, stride, dilation=plan.dilation, first_dilation=first_dilation
            )
        else:
            layer = bottleneck_layer(
                in_channels,
                out_channels,
                stride,
                stride_in_first=config.downsample_in_bottleneck,
                dilation=first_dilation,
            )
        return ResidualBlock(layer, projection_shortcut(in_channels, out_channels, stride), config.hidden_act)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' ResNetPreTrainedModel does."""
        init_conv_and_batch_norm_(module)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.embedder, self.encoder.stages
