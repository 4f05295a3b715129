"""HGNetV2 backbone (PP-HGNetV2, the CNN of D-FINE, DEIM and RT-DETR's real-time variants).

Papers: D-FINE, https://arxiv.org/abs/2410.13842 (which trains on it); the HGNet family comes from
PaddlePaddle's PP-HGNet (https://github.com/PaddlePaddle/PaddleClas).

Module attribute names are the checkpoint's key names: they reproduce transformers' ``HGNetV2Backbone``
state dict (``embedder.stem1.convolution.weight``, ``encoder.stages.2.blocks.0.layers.1.conv2.lab.scale``,
...), so its checkpoints load unchanged and ours load into it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import Backbone
from backbones.layers import (
    CheckpointableLayer,
    ConvNormActivation,
    LearnableAffine,
    StemAndStages,
    init_conv_and_batch_norm_,
)

from ._config import HGNetV2Config

__all__ = ["HGNetV2Backbone"]


class _ConvNorm(ConvNormActivation):
    """Convolution (no bias), BatchNorm, then optionally an activation and a learnable affine.

    The affine (``lab``) exists only after an activation, as in transformers; without one the module
    has no ``lab`` keys. :meth:`reparameterize` folds the BatchNorm into the convolution; the affine
    follows the activation, so it stays.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = "relu",
        affine: bool = False,
        dilation: int = 1,
    ) -> None:
        # The activation reads the fresh BatchNorm output only, so ReLU may overwrite it.
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=groups,
            activation=activation,
            affine=affine,
        )


class _LightConv(nn.Module):
    """A 1x1 convolution without activation, then a depthwise ``k x k`` one (keys ``conv1``, ``conv2``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, affine: bool, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _ConvNorm(in_channels, out_channels, 1, activation=None, affine=affine)
        self.conv2 = _ConvNorm(
            out_channels, out_channels, kernel_size, groups=out_channels, affine=affine, dilation=dilation
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
                layers.append(_ConvNorm(source, mid_channels, kernel_size, affine=affine, dilation=dilation))
        self.layers = nn.ModuleList(layers)
        concatenated = in_channels + num_layers * mid_channels
        self.aggregation = nn.Sequential(
            _ConvNorm(concatenated, out_channels // 2, 1, affine=affine),
            _ConvNorm(out_channels // 2, out_channels, 1, affine=affine),
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
            _ConvNorm(
                in_channels,
                in_channels,
                3,
                stride=plan.stride,
                groups=in_channels,
                activation=None,
                dilation=plan.first_dilation,
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


class _Stem(nn.Module):
    """The stem: ``stem1`` (3x3), then two branches of its right/bottom-padded output concatenated
    (a stride-1 2x2 max-pool, and ``stem2a`` -> pad -> ``stem2b``, two 2x2 convolutions), then ``stem3``
    (3x3) and ``stem4`` (1x1).
    """

    def __init__(self, config: HGNetV2Config) -> None:
        super().__init__()
        _, middle, out = config.stem_channels
        strides = config.stem_strides
        act, affine = config.hidden_act, config.use_learnable_affine_block
        self.stem1 = _ConvNorm(config.num_channels, middle, 3, strides[0], activation=act, affine=affine)
        self.stem2a = _ConvNorm(middle, middle // 2, 2, strides[1], activation=act, affine=affine)
        self.stem2b = _ConvNorm(middle // 2, middle, 2, strides[2], activation=act, affine=affine)
        self.stem3 = _ConvNorm(middle * 2, middle, 3, strides[3], activation=act, affine=affine)
        self.stem4 = _ConvNorm(middle, out, 1, strides[4], activation=act, affine=affine)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1)

    def forward(self, pixel_values: Tensor) -> Tensor:
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


class _Encoder(nn.Module):
    """Holds the stages under the checkpoint's ``encoder.stages`` keys; the backbone runs them."""

    def __init__(self, config: HGNetV2Config) -> None:
        super().__init__()
        self.stages = nn.ModuleList(_Stage(config, index) for index in range(config.num_stages))


class HGNetV2Backbone(StemAndStages, Backbone):
    """HGNetV2 feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the stem's output; stage ``i`` is the output of HG stage ``i``. A forward
    runs only up to the deepest requested stage (all stages when hidden states are requested).
    ``config.freeze_at`` / ``freeze_stem_only`` / ``freeze_norm`` are applied when the model is built or loaded.

    Args:
        config: The architecture and the output selection.

    Example:
        >>> model = HGNetV2Backbone(HGNetV2Config(out_indices=[1, 2, 3, 4])).eval()  # doctest: +SKIP
        >>> [fmap.shape[1] for fmap in model(torch.randn(1, 3, 224, 224)).feature_maps]  # doctest: +SKIP
        [128, 512, 1024, 2048]
    """

    config_class = HGNetV2Config
    lora_target_modules = ("aggregation.0.convolution", "aggregation.1.convolution", "conv1.convolution")
    freeze_at_extra_stages = 1  # D-FINE's HGNetv2: freeze_at = k freezes the stem and k + 1 stages
    # HGNetV2ForImageClassification keeps embedder/encoder at the top level; its head ("fc") goes unused.
    base_model_prefix = ""
    has_attentions = False
    reference_class_name = "HGNetV2Backbone"
    input_model_name = "HGNetV2"
    config: HGNetV2Config

    def __init__(self, config: HGNetV2Config) -> None:
        super().__init__(config)
        self.embedder = _Stem(config)
        self.encoder = _Encoder(config)
        # The real widths: transformers reports [embedding_size, *hidden_sizes], which the hub's B0-B3
        # configs leave at defaults that are not the maps' widths.
        self.num_features = [config.stem_channels[2], *config.stage_out_channels]
        stem_stride = config.stem_strides[0] * config.stem_strides[3] * config.stem_strides[4]
        self.reductions = [stem_stride] + [plan.reduction for plan in config.stage_plans]
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' HGNetV2PreTrainedModel does."""
        if init_conv_and_batch_norm_(module, self.config.initializer_range):
            return
        if isinstance(module, LearnableAffine):
            nn.init.ones_(module.scale)
            nn.init.zeros_(module.bias)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.embedder, self.encoder.stages
