"""HGNetV2 backbone (PP-HGNetV2, the CNN of D-FINE, DEIM and RT-DETR's real-time variants).

Papers: D-FINE, https://arxiv.org/abs/2410.13842 (which trains on it); the HGNet family comes from
PaddlePaddle's PP-HGNet (https://github.com/PaddlePaddle/PaddleClas).

Module attribute names are the checkpoint's key names: they reproduce transformers' ``HGNetV2Backbone``
state dict (``embedder.stem1.convolution.weight``, ``encoder.stages.2.blocks.0.layers.1.conv2.lab.scale``,
...), so its checkpoints load unchanged and ours load into it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import (
    CheckpointableLayer,
    ConvNormActivation,
    StageList,
    StemAndStages,
    init_conv_and_batch_norm_,
)

from ._config import HGNetV2Config
from .blocks import HGNetStem

__all__ = ["HGNetV2Backbone"]


class _LightConv(nn.Module):
    """A 1x1 convolution without activation, then a depthwise ``k x k`` one (keys ``conv1``, ``conv2``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, affine: bool, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvNormActivation(in_channels, out_channels, 1)
        self.conv2 = ConvNormActivation(
            out_channels,
            out_channels,
            kernel_size,
            groups=out_channels,
            activation="relu",
            affine=affine,
            dilation=dilation,
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.conv2(self.conv1(hidden))


class _HGBlock(CheckpointableLayer):
    """One HG block: a chain of convolutions whose input and every output are concatenated, then
    squeezed to half the output width and expanded back by two 1x1 convolutions (``aggregation``);
    every block but a stage's first adds its input. The unit of gradient checkpointing.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        num_layers: int,
        kernel_size: int,
        *,
        residual: bool,
        light: bool,
        affine: bool,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.residual = residual
        layers: list[nn.Module] = []
        for index in range(num_layers):
            source = in_channels if index == 0 else mid_channels
            if light:
                layers.append(_LightConv(source, mid_channels, kernel_size, affine, dilation))
            else:
                layers.append(
                    ConvNormActivation(
                        source, mid_channels, kernel_size, activation="relu", affine=affine, dilation=dilation
                    )
                )
        self.layers = nn.ModuleList(layers)
        concatenated = in_channels + num_layers * mid_channels
        self.aggregation = nn.Sequential(
            ConvNormActivation(concatenated, out_channels // 2, 1, activation="relu", affine=affine),
            ConvNormActivation(out_channels // 2, out_channels, 1, activation="relu", affine=affine),
        )

    def forward(self, hidden: Tensor) -> Tensor:
        pieces = [hidden]
        current = hidden
        for layer in self.layers:
            current = layer(current)
            pieces.append(current)
        out = self.aggregation(torch.cat(pieces, dim=1))
        if self.residual:
            out = out + hidden
        return out


class _Stage(nn.Module):
    """An optional strided depthwise 3x3 convolution (``downsample``), then HG blocks (``blocks``).

    Past ``output_stride`` the downsampling convolution has stride 1 and the previous stage's dilation,
    and the blocks' ``k x k`` convolutions the stage's dilation.
    """

    def __init__(self, config: HGNetV2Config, index: int) -> None:
        super().__init__()
        in_channels = config.stage_in_channels[index]
        out_channels = config.stage_out_channels[index]
        plan = config.stage_plans[index]
        # transformers' downsample never has an activation, hence never a learnable affine either.
        self.downsample = (
            ConvNormActivation(
                in_channels, in_channels, 3, plan.stride, groups=in_channels, dilation=plan.first_dilation
            )
            if config.stage_downsample[index]
            else None
        )
        self.blocks = nn.ModuleList(
            _HGBlock(
                in_channels if block == 0 else out_channels,
                config.stage_mid_channels[index],
                out_channels,
                config.stage_numb_of_layers[index],
                config.stage_kernel_size[index],
                residual=block > 0,
                light=config.stage_light_block[index],
                affine=config.use_learnable_affine_block,
                dilation=plan.dilation,
            )
            for block in range(config.stage_num_blocks[index])
        )

    def forward(self, hidden: Tensor) -> Tensor:
        if self.downsample is not None:
            hidden = self.downsample(hidden)
        for block in self.blocks:
            hidden = block(hidden)
        return hidden


class HGNetV2Backbone(StemAndStages, Backbone):
    """HGNetV2 feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the stem's output; stage ``i`` is the output of HG stage ``i``. A forward
    runs only up to the deepest requested stage (all stages when hidden states are requested).
    ``config.freeze_at`` / ``freeze_stem_only`` / ``freeze_norm`` are applied when the model is built or loaded.

    With the default configuration the stem is 48 channels wide and the four stages 128, 512, 1024 and 2048, at
    strides 4, 8, 16 and 32.
    """

    config_class = HGNetV2Config
    lora_target_modules = ("aggregation.0.convolution", "aggregation.1.convolution", "conv1.convolution")
    freeze_at_extra_stages = 1  # D-FINE's HGNetv2: freeze_at = k freezes the stem and k + 1 stages
    # HGNetV2ForImageClassification keeps embedder/encoder at the top level; its head ("fc") goes unused.
    base_model_prefix = ""
    has_attentions = False
    input_model_name = "HGNetV2"
    config: HGNetV2Config

    def __init__(self, config: HGNetV2Config) -> None:
        super().__init__(config)
        _, middle, out = config.stem_channels
        self.embedder = HGNetStem(
            config.num_channels, middle, out, config.stem_strides, config.hidden_act, config.use_learnable_affine_block
        )
        self.encoder = StageList(_Stage(config, index) for index in range(config.num_stages))
        # The real widths: transformers reports [embedding_size, *hidden_sizes], which the hub's B0-B3
        # configs leave at defaults that are not the maps' widths.
        self.num_features = [config.stem_channels[2], *config.stage_out_channels]
        stem_stride = config.stem_strides[0] * config.stem_strides[3] * config.stem_strides[4]
        self.reductions = [stem_stride] + [plan.reduction for plan in config.stage_plans]
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' HGNetV2PreTrainedModel does."""
        init_conv_and_batch_norm_(module, self.config.initializer_range)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.embedder, self.encoder.stages
