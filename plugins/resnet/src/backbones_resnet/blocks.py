"""Public building blocks of ResNet: convolution-norm layers, residual blocks (basic and bottleneck), the stem,
stages and the encoder, for plugins that build on ResNet (e.g. RT-DETR's ResNet-vd, whose deep stem and
average-pool shortcuts are other modules put into the same :class:`ResidualBlock` and :class:`ResNetEmbeddings`).

Paper: He et al., "Deep Residual Learning for Image Recognition" (2015), https://arxiv.org/abs/1512.03385.

Every name in ``__all__`` is part of backbones-resnet's public API and follows the versioning rule of
docs/plugins.md ("Building on another plugin's blocks"): a dependent plugin pins ``backbones-resnet>=0.1,<0.2``.
Attribute names are checkpoint key names in transformers' ResNet format (``embedder.embedder.convolution``,
``layer.0.normalization``, ``shortcut.convolution``, ...).

Layout: ``(batch, channels, height, width)`` maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation as build_activation
from backbones.layers import (
    BlockSequence,
    CheckpointableLayer,
    ConvNormActivation,
    StageList,
    StemAndStages,
    init_conv_and_batch_norm_,
)
from backbones.validation import DilatedStage

from ._config import ResNetConfig

__all__ = [
    "ConvNormLayer",
    "ResNetEmbeddings",
    "ResNetEncoder",
    "ResNetLayoutBackbone",
    "ResNetStage",
    "ResidualBlock",
    "basic_layer",
    "bottleneck_layer",
    "projection_shortcut",
    "residual_layer",
]


def _make_activation(name: str) -> nn.Module:
    """The in-place activation module of ``name`` (a key of :data:`backbones.activations.ACTIVATIONS`)."""
    return build_activation(name, inplace=True)


class ConvNormLayer(ConvNormActivation):
    """Convolution without bias, BatchNorm, then an optional activation (keys ``convolution``, ``normalization``).

    :meth:`reparameterize` folds the BatchNorm into the convolution for inference
    (:class:`backbones.reparam.Reparameterizable`); the unit is :class:`backbones.layers.ConvNormActivation`.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Side of the square kernel; padded by ``dilation * (kernel_size // 2)`` (same size at stride 1).
        stride: Stride of the convolution.
        activation: Name of the activation after the norm, or ``None`` for none.
        dilation: Dilation of the convolution (``output_stride`` below 32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        activation: str | None = "relu",
        *,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation=dilation, activation=activation)


def basic_layer(
    in_channels: int, out_channels: int, stride: int = 1, *, dilation: int = 1, first_dilation: int | None = None
) -> nn.Sequential:
    """The residual branch of a basic block (ResNet-18/34): two 3x3 conv-norm layers, the second without
    activation; the first carries the stride.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution.
        dilation: Dilation of the second convolution (and of the first unless ``first_dilation`` is given).
        first_dilation: Dilation of the first convolution (in a dilated stage's first block, the previous
            stage's dilation; see :func:`backbones.validation.dilate_stages`).
    """
    first = dilation if first_dilation is None else first_dilation
    return nn.Sequential(
        ConvNormLayer(in_channels, out_channels, 3, stride, dilation=first),
        ConvNormLayer(out_channels, out_channels, 3, activation=None, dilation=dilation),
    )


def bottleneck_layer(
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    *,
    reduction: int = 4,
    stride_in_first: bool = False,
    dilation: int = 1,
) -> nn.Sequential:
    """The residual branch of a bottleneck block (ResNet-50 and deeper): 1x1, 3x3, 1x1 conv-norm layers with a
    ``reduction`` times narrower middle, the last without activation.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the branch.
        reduction: ``out_channels // reduction`` is the middle width.
        stride_in_first: Put the stride on the first 1x1 convolution (transformers'
            ``downsample_in_bottleneck``) instead of the 3x3 one.
        dilation: Dilation of the 3x3 convolution (``output_stride`` below 32).
    """
    middle = out_channels // reduction
    return nn.Sequential(
        ConvNormLayer(in_channels, middle, 1, stride if stride_in_first else 1),
        ConvNormLayer(middle, middle, 3, 1 if stride_in_first else stride, dilation=dilation),
        ConvNormLayer(middle, out_channels, 1, activation=None),
    )


def residual_layer(
    config: ResNetConfig, in_channels: int, out_channels: int, plan: DilatedStage, *, first: bool
) -> nn.Sequential:
    """The residual branch of one block of a stage planned by ``plan``, of ``config.layer_type``: a
    :func:`basic_layer` or a :func:`bottleneck_layer` (stride on its first 1x1 convolution if
    ``config.downsample_in_bottleneck``).

    The stage's first block carries the stride, and its first 3x3 convolution the previous stage's dilation
    (``plan.first_dilation``, timm's rule); the other blocks have stride 1 and the stage's dilation.

    Args:
        config: The architecture (its ``layer_type`` and ``downsample_in_bottleneck``).
        in_channels: Input channels.
        out_channels: Output channels.
        plan: The stage's stride and dilations (from :func:`backbones.validation.dilate_stages`).
        first: Whether the block is the stage's first.
    """
    stride = plan.stride if first else 1
    first_dilation = plan.first_dilation if first else plan.dilation
    if config.layer_type == "basic":
        return basic_layer(in_channels, out_channels, stride, dilation=plan.dilation, first_dilation=first_dilation)
    return bottleneck_layer(
        in_channels, out_channels, stride, stride_in_first=config.downsample_in_bottleneck, dilation=first_dilation
    )


def projection_shortcut(in_channels: int, out_channels: int, stride: int = 1) -> ConvNormLayer | None:
    """ResNet's shortcut: a strided 1x1 conv-norm projection when the shape changes, else ``None`` (identity)."""
    if in_channels == out_channels and stride == 1:
        return None
    return ConvNormLayer(in_channels, out_channels, 1, stride, activation=None)


class ResidualBlock(CheckpointableLayer):
    """One residual block: ``activation(layer(x) + shortcut(x))`` (keys ``layer``, ``shortcut``); the unit of
    gradient checkpointing.

    Args:
        layer: The residual branch (e.g. :func:`basic_layer` or :func:`bottleneck_layer`). The shortcut is
            added to its output in place, so that output must be a fresh tensor (as a norm's output is).
        shortcut: The shortcut branch (e.g. :func:`projection_shortcut`), or ``None`` for the identity.
        hidden_act: Name of the activation of the block output.
    """

    def __init__(self, layer: nn.Module, shortcut: nn.Module | None = None, hidden_act: str = "relu") -> None:
        super().__init__()
        self.shortcut = shortcut
        self.layer = layer
        self.activation = _make_activation(hidden_act)

    def forward(self, hidden: Tensor) -> Tensor:
        """``activation(layer(hidden) + shortcut(hidden))``."""
        residual = hidden if self.shortcut is None else self.shortcut(hidden)
        out = self.layer(hidden)
        # In place: ``out`` is the fresh output of the last BatchNorm, which its backward does not need.
        out += residual
        return self.activation(out)


class ResNetStage(BlockSequence):
    """A run of residual blocks (key ``layers``): a :class:`backbones.layers.BlockSequence`.

    Args:
        blocks: The blocks, in order (in ResNet only the first changes channels or resolution).
    """


class ResNetEmbeddings(nn.Module):
    """The stem: ``embedder`` (ResNet: one 7x7 stride-2 conv-norm layer; ResNet-vd: three 3x3 ones), then
    ``pooler`` (a 3x3 stride-2 max-pool by default), so the stages start at stride 4.

    On CPU the stem runs in the channels-last memory format and returns its output in the input's layout.

    Args:
        embedder: The convolutional part of the stem.
        pooler: The pooling after it (default: ``nn.MaxPool2d(3, stride=2, padding=1)``).
    """

    def __init__(self, embedder: nn.Module, pooler: nn.Module | None = None) -> None:
        super().__init__()
        self.embedder = embedder
        self.pooler = pooler if pooler is not None else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """``(B, C, H, W)`` pixels to the stem's map."""
        if pixel_values.device.type != "cpu" or pixel_values.is_contiguous(memory_format=torch.channels_last):
            return self.pooler(self.embedder(pixel_values))
        # PyTorch's CPU max-pool is over 10x slower on NCHW maps than on channels_last ones (61 ms vs 4 ms
        # for ResNet-50's stem at batch 8 on one thread, half the stem's time), and the 7x7 convolution is
        # no slower, so the stem runs channels_last and only its pooled output returns to the input's layout.
        hidden = self.pooler(self.embedder(pixel_values.contiguous(memory_format=torch.channels_last)))
        return hidden.contiguous()


class ResNetEncoder(StageList):
    """ResNet's stages under the key ``stages`` (pruning shortens the list): a
    :class:`backbones.layers.StageList`.

    Args:
        stages: The stages, shallowest first.
    """


class ResNetLayoutBackbone(StemAndStages, Backbone):
    """Base of a backbone laid out as transformers' ``ResNetBackbone``: a :class:`ResNetEmbeddings` stem at
    stride 4 (key ``embedder``), then a :class:`ResNetEncoder` of :class:`ResNetStage` (key ``encoder``), one
    stage per ``config.depths`` entry with ``config.hidden_sizes`` channels, dilated after
    ``config.stage_plans``; convolutions and BatchNorms initialised as transformers' ResNet does.

    A subclass sets ``config_class`` and ``input_model_name``, implements
    :meth:`_stage_blocks`, and calls :meth:`_build_trunk` with its stem from ``__init__``.

    Args:
        config: The architecture (a :class:`~backbones_resnet.ResNetConfig` or a subclass) and the output
            selection.
    """

    lora_target_modules = ("convolution",)
    base_model_prefix = "resnet"  # prefix of the trunk in the ForImageClassification checkpoints
    has_attentions = False
    config: ResNetConfig
    embedder: ResNetEmbeddings
    encoder: ResNetEncoder

    def _build_trunk(self, stem: nn.Module) -> None:
        """Set ``embedder`` (``stem``, then the max-pool), ``encoder`` (the stages of :meth:`_stage_blocks`),
        ``num_features`` and ``reductions``, then initialise the weights.

        Args:
            stem: The convolutional part of the stem, from ``config.num_channels`` to
                ``config.embedding_size`` channels at stride 2.
        """
        config = self.config
        channels = [config.embedding_size, *config.hidden_sizes]
        plans = config.stage_plans
        self.embedder = ResNetEmbeddings(stem)
        self.encoder = ResNetEncoder(
            ResNetStage(self._stage_blocks(channels[index], channels[index + 1], depth, plan))
            for index, (depth, plan) in enumerate(zip(config.depths, plans))
        )
        self.num_features = channels
        self.reductions = [4] + [plan.reduction for plan in plans]
        self.post_init()

    def _stage_blocks(self, in_channels: int, out_channels: int, depth: int, plan: DilatedStage) -> list[nn.Module]:
        """The ``depth`` residual blocks of one stage, from ``in_channels`` to ``out_channels``, planned by
        ``plan`` (its stride and dilations, from :func:`backbones.validation.dilate_stages`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _stage_blocks")

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' ResNet does (:func:`backbones.layers.init_conv_and_batch_norm_`)."""
        init_conv_and_batch_norm_(module)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.embedder, self.encoder.stages
