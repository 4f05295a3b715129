"""PP-LCNet, PP-LCNetV3 and PP-LCNetV4 backbones (PaddlePaddle's lightweight CPU networks).

Paper: PP-LCNet: A Lightweight CPU Convolutional Neural Network, https://arxiv.org/abs/2109.15099. V3 and
V4 are the backbones of PP-OCRv5 / PP-OCRv6 (https://github.com/PaddlePaddle/PaddleOCR).

Module attribute names are the checkpoint's key names: they reproduce transformers' ``PPLCNetBackbone``,
``PPLCNetV3Backbone`` and ``PPLCNetV4Backbone`` state dicts (``encoder.convolution.convolution.weight``,
``encoder.blocks.4.layers.0.depthwise_convolution.conv_symmetric.2.normalization.running_var``, ...), so
their checkpoints load unchanged and ours load into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import BlockSequence, CheckpointableLayer, StemAndStages, init_conv_and_batch_norm_
from backbones_hgnet_v2.blocks import HGNetStem

from ._config import PPLCNetConfig, PPLCNetV3Config, PPLCNetV4Config, Stride, _LCNetConfig, stride_pair
from .blocks import ConvNormLayer, LearnableRepLayer, SqueezeExcitation

__all__ = ["PPLCNetBackbone", "PPLCNetV3Backbone", "PPLCNetV4Backbone"]

_LCNetConfigT = TypeVar("_LCNetConfigT", bound=_LCNetConfig)


def _reductions(first: tuple[int, int], strides: list[list[Stride]]) -> list[tuple[int, int]]:
    """``(height, width)`` stride of the stem (``first``) and of every stage (its blocks' ``strides``)."""
    out = [first]
    for stage in strides:
        height, width = out[-1]
        for stride in stage:
            step_h, step_w = stride_pair(stride)
            height, width = height * step_h, width * step_w
        out.append((height, width))
    return out


# -- PP-LCNet and V3 ----------------------------------------------------------------------------------


class _DepthwiseSeparable(CheckpointableLayer):
    """Depthwise ``k x k`` conv-BN-act, optional squeeze-excitation, pointwise conv-BN-act (PP-LCNet)."""

    def __init__(self, config: PPLCNetConfig, block: list[Any]) -> None:
        super().__init__()
        kernel, in_channels, out_channels, stride, use_se = block
        width_in, width_out = config.width(in_channels), config.width(out_channels)
        act = config.hidden_act
        self.depthwise_convolution = ConvNormLayer(
            width_in,
            width_in,
            kernel,
            stride,
            groups=width_in,
            activation=act,
        )
        self.squeeze_excitation_module = SqueezeExcitation(width_in, config.reduction) if use_se else nn.Identity()
        self.pointwise_convolution = ConvNormLayer(width_in, width_out, 1, activation=act)

    def forward(self, hidden: Tensor) -> Tensor:
        hidden = self.depthwise_convolution(hidden)
        hidden = self.squeeze_excitation_module(hidden)
        return self.pointwise_convolution(hidden)


class _RepDepthwiseSeparable(CheckpointableLayer):
    """PP-LCNetV3's block: the depthwise and the pointwise convolution are :class:`LearnableRepLayer`."""

    def __init__(self, config: PPLCNetV3Config, block: list[Any]) -> None:
        super().__init__()
        kernel, in_channels, out_channels, stride, use_se = block
        width_in, width_out = config.width(in_channels), config.width(out_channels)
        branches, act = config.conv_symmetric_num, config.hidden_act
        self.depthwise_convolution = LearnableRepLayer(
            width_in,
            width_in,
            kernel,
            stride,
            branches,
            act,
            groups=width_in,
        )
        self.squeeze_excitation_module = SqueezeExcitation(width_in, config.reduction) if use_se else nn.Identity()
        self.pointwise_convolution = LearnableRepLayer(width_in, width_out, 1, 1, branches, act)

    def forward(self, hidden: Tensor) -> Tensor:
        hidden = self.depthwise_convolution(hidden)
        hidden = self.squeeze_excitation_module(hidden)
        return self.pointwise_convolution(hidden)


class _Encoder(nn.Module):
    """Holds the stem (``convolution``) and the stages (``blocks``) under the checkpoint's ``encoder.`` keys."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module]) -> None:
        super().__init__()
        self.convolution = stem
        self.blocks = nn.ModuleList(stages)


class _LCNetBackbone(StemAndStages, Backbone):
    """What the three versions share: stem + stages under ``encoder``, transformers' initialisation."""

    base_model_prefix = ""
    has_attentions = False
    input_model_name = "PP-LCNet"
    encoder: _Encoder

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' PreTrainedModel does for these models."""
        init_conv_and_batch_norm_(module, 0.02)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.encoder.convolution, self.encoder.blocks

    def _build_stages(
        self, config: _LCNetConfigT, stem: nn.Module, make_block: Callable[[_LCNetConfigT, list[Any]], nn.Module]
    ) -> None:
        """PP-LCNet's and V3's trunk: ``stem``, then one :class:`~backbones.layers.BlockSequence` per row of ``config.block_configs``,
        each block ``make_block(config, block)``; then the widths and strides, and the initialisation."""
        stages: list[nn.Module] = [
            BlockSequence(make_block(config, block) for block in blocks) for blocks in config.block_configs
        ]
        self.encoder = _Encoder(stem, stages)
        self.num_features = [config.stem_width, *(config.width(blocks[-1][2]) for blocks in config.block_configs)]
        strides = [[block[3] for block in blocks] for blocks in config.block_configs]
        self._set_reductions(_reductions(stride_pair(config.stem_stride), strides))
        self.post_init()

    def _set_reductions(self, pairs: list[tuple[int, int]]) -> None:
        self.reductions_hw = pairs
        # One number per stage for the API: the height stride (the width stride differs only where a
        # text-recognition config halves the height alone; reductions_hw has both).
        self.reductions = [height for height, _ in pairs]


class PPLCNetBackbone(_LCNetBackbone):
    """PP-LCNet feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the stem convolution's output; stage ``i`` the output of stage ``i``'s blocks. A
    forward runs only up to the deepest requested stage. :meth:`reparameterize` folds every BatchNorm into
    its convolution for inference.

    With the default configuration the five stages are 32, 64, 128, 256 and 512 channels wide, at strides 2 to 32.
    """

    config_class = PPLCNetConfig
    lora_target_modules = ("pointwise_convolution.convolution",)
    config: PPLCNetConfig

    def __init__(self, config: PPLCNetConfig) -> None:
        super().__init__(config)
        stem = ConvNormLayer(
            config.num_channels, config.stem_width, 3, config.stem_stride, activation=config.hidden_act
        )
        self._build_stages(config, stem, _DepthwiseSeparable)


class PPLCNetV3Backbone(_LCNetBackbone):
    """PP-LCNetV3 feature extractor with transformers-compatible state-dict keys.

    The stages of :class:`PPLCNetBackbone`, with reparameterisable blocks (see
    :class:`~backbones_pp_lcnet.blocks.LearnableRepLayer`): :meth:`reparameterize` folds each block's
    branches and BatchNorms into one depthwise and one pointwise convolution.

    With the default configuration the five stages are 32, 64, 128, 256 and 512 channels wide, at strides 2 to 32.
    """

    config_class = PPLCNetV3Config
    # The first k x k (here 1x1) branch of every pointwise layer: the dense convolutions.
    lora_target_modules = ("pointwise_convolution.conv_symmetric.0.convolution",)
    input_model_name = "PP-LCNetV3"
    config: PPLCNetV3Config

    def __init__(self, config: PPLCNetV3Config) -> None:
        super().__init__(config)
        stem = ConvNormLayer(config.num_channels, config.stem_width, 3, config.stem_stride)
        self._build_stages(config, stem, _RepDepthwiseSeparable)


# -- PP-LCNetV4 ----------------------------------------------------------------------------------------


class _SmallStem(nn.Module):
    """Two stride-2 3x3 conv-BN layers with a GELU between (``conv1``, ``conv2``)."""

    def __init__(self, config: PPLCNetV4Config) -> None:
        super().__init__()
        _, middle, out = config.stem_channels
        self.conv1 = ConvNormLayer(config.num_channels, middle, 3, 2)
        self.act_fn = nn.GELU()
        self.conv2 = ConvNormLayer(middle, out, 3, 2)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.conv2(self.act_fn(self.conv1(pixel_values)))


class _V4Block(CheckpointableLayer):
    """PP-LCNetV4's block: depthwise token mixer, optional squeeze-excitation, then a 1x1 (x2) - GELU - 1x1
    channel mixer, with a residual over the channel mixer where the block keeps its shape.

    The token mixer of a shape-keeping block is one convolution with a bias (PaddleOCR's RepDW, stored
    folded in the checkpoints); a strided or widening block's is depthwise conv-BN.
    """

    def __init__(self, config: PPLCNetV4Config, block: list[Any]) -> None:
        super().__init__()
        kernel, in_channels, out_channels, stride, use_se = block
        self.has_residual = in_channels == out_channels and stride == 1
        self.token_conv: nn.Module
        if self.has_residual:
            self.token_conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=in_channels)
        else:
            self.token_conv = ConvNormLayer(in_channels, in_channels, kernel, stride, groups=in_channels)
        self.token_squeeze_excitation = SqueezeExcitation(in_channels, config.reduction) if use_se else nn.Identity()
        self.channel_conv1 = ConvNormLayer(in_channels, in_channels * 2, 1)
        self.channel_act_fn = nn.GELU()
        self.channel_conv2 = ConvNormLayer(in_channels * 2, out_channels, 1)

    def forward(self, hidden: Tensor) -> Tensor:
        hidden = self.token_squeeze_excitation(self.token_conv(hidden))
        out = self.channel_conv2(self.channel_act_fn(self.channel_conv1(hidden)))
        return hidden + out if self.has_residual else out


class _V4Stage(nn.Module):
    """The blocks of one PP-LCNetV4 stage (key ``blocks``)."""

    def __init__(self, config: PPLCNetV4Config, index: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(_V4Block(config, block) for block in config.block_configs[index]))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.blocks(hidden)


class PPLCNetV4Backbone(_LCNetBackbone):
    """PP-LCNetV4 feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the stem's output; stage ``i`` the output of stage ``i``'s blocks.
    :meth:`reparameterize` folds every BatchNorm into its convolution for inference.

    With the default configuration (a text-recognition trunk) the stem and the four stages are 96, 96, 96, 192 and
    384 channels wide; after the stem's stride 4 only the height is halved, by stages 3 and 4, so a 48 x 320 text
    line gives maps of heights 12, 12, 12, 6 and 3, all 80 wide.
    """

    config_class = PPLCNetV4Config
    lora_target_modules = ("channel_conv1.convolution", "channel_conv2.convolution")
    input_model_name = "PP-LCNetV4"
    config: PPLCNetV4Config

    def __init__(self, config: PPLCNetV4Config) -> None:
        super().__init__(config)
        stem: nn.Module
        if config.stem_type == "large":
            _, middle, out = config.stem_channels
            stem = HGNetStem(
                config.num_channels,
                middle,
                out,
                [stride_pair(stride) for stride in config.stem_strides],
                config.hidden_act,
                config.use_learnable_affine_block,
            )
            first = (1, 1)
            for index in (0, 3, 4):
                step = stride_pair(config.stem_strides[index])
                first = (first[0] * step[0], first[1] * step[1])
        else:
            stem, first = _SmallStem(config), (4, 4)
        stages: list[nn.Module] = [_V4Stage(config, index) for index in range(len(config.block_configs))]
        self.encoder = _Encoder(stem, stages)
        self.num_features = [config.stem_channels[2], *config.stage_out_channels]
        strides = [[block[3] for block in blocks] for blocks in config.block_configs]
        self._set_reductions(_reductions(first, strides))
        self.post_init()
