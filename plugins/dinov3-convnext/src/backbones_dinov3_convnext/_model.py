"""DINOv3 ConvNeXt backbone: a ConvNeXt distilled from the DINOv3 ViT-7B teacher.

Paper: Siméoni et al., "DINOv3" (2025), https://arxiv.org/abs/2508.10104; the architecture is Liu et al.'s
ConvNeXt, "A ConvNet for the 2020s" (2022), https://arxiv.org/abs/2201.03545.

Module attribute names are the checkpoint's key names as transformers writes them to disk and the hub
holds them (``stages.0.downsample_layers.0.weight``, ``stages.2.layers.5.depthwise_conv.weight``,
``stages.3.layers.2.gamma``). transformers 5 moves the stages under ``model.`` in memory and back on save;
a checkpoint written from its in-memory state dict (``model.stages.N...``) is accepted too.

As in transformers' ``DINOv3ConvNextBackbone``, stage 0 (``"stem"``) is the input image itself and stage
``K`` is the output of stage ``K``: its downsampling layer (stage 1: a 4x4 stride-4 patchify convolution,
then a norm; the others: a norm, then a 2x2 stride-2 convolution) and its blocks. The maps have no output
norms.

Layout: a block's pointwise layers run on ``(batch, height, width, channels)`` tensors, which are
``permute`` views of the ``(batch, channels, height, width)`` maps the convolutions see. After the first
norm every map is in the channels-last memory format, so these views are free and the depthwise
convolutions run channels-last too; feature maps come back as ``(B, C, H, W)`` views of that memory.

The downsampling norms are backbones-convnext's public ``ChannelsFirstLayerNorm``. Its other blocks do not
fit DINOv3's checkpoints: their keys are transformers' ConvNeXt names (``dwconv``, ``layernorm``,
``pwconv1``, ``layer_scale_parameter``, ``downsampling_layer``, a separate ``embeddings`` stem), where
DINOv3 writes ``depthwise_conv``, ``layer_norm``, ``pointwise_conv1``, ``gamma`` and ``downsample_layers``
with the patchify convolution inside the first stage, and every DINOv3 block has its scale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.activations import make_activation
from backbones.layers import (
    CheckpointableLayer,
    StemAndStages,
    drop_path,
    drop_path_rates,
    init_linear_and_norm_,
    linear,
)
from backbones_convnext.blocks import ChannelsFirstLayerNorm

from ._config import DINOv3ConvNextConfig

__all__ = ["DINOv3ConvNextBackbone"]

# The stem's patchify convolution: 4x4 patches, stride 4 (fixed in DINOv3, as in ConvNeXt).
_PATCH = 4
# Stage 0 is the input image itself; this parameter-free module stands for it in the stem-and-stages forward.
_INPUT_AS_STEM = nn.Identity()


class _Layer(CheckpointableLayer):
    """One block: ``x + gamma * pointwise_conv2(act(pointwise_conv1(layer_norm(depthwise_conv(x)))))``; the
    unit of gradient checkpointing. ``depthwise_conv`` is 7x7; the pointwise layers (4x expansion) are
    ``nn.Linear`` on channels-last views, as in transformers' keys."""

    def __init__(self, dim: int, config: DINOv3ConvNextConfig, drop_path_rate: float) -> None:
        super().__init__()
        self.depthwise_conv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pointwise_conv1 = nn.Linear(dim, 4 * dim)
        self.act = make_activation(config.hidden_act)
        self.pointwise_conv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), config.layer_scale_init_value))
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim, H, W)`` to ``(B, dim, H, W)``."""
        branch = self.layer_norm(self.depthwise_conv(x).permute(0, 2, 3, 1))
        branch = linear(linear(branch, self.pointwise_conv1, self.act), self.pointwise_conv2)
        if self.drop_path_rate and self.training:
            return x + drop_path((branch * self.gamma).permute(0, 3, 1, 2), self.drop_path_rate, True)
        # Scale and residual in one pass, on the (B, H, W, C) views where gamma broadcasts along the last
        # axis: a (C, 1, 1) scale against the (B, C, H, W) view makes the output-layout logic compare
        # strides with symbolic ones, a guard torch.export with dynamic height and width cannot prove.
        return torch.addcmul(x.permute(0, 2, 3, 1), branch, self.gamma).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"drop_path_rate={self.drop_path_rate}" if self.drop_path_rate else ""


class _Stage(nn.Module):
    """Downsampling (key ``downsample_layers``), then the blocks (key ``layers``).

    The first stage patchifies (convolution, then norm); the others halve the resolution (norm, then
    convolution).
    """

    def __init__(
        self, in_channels: int, out_channels: int, blocks: Iterable[nn.Module], *, first: bool, eps: float
    ) -> None:
        super().__init__()
        downsample: list[nn.Module]
        if first:
            downsample = [
                nn.Conv2d(in_channels, out_channels, kernel_size=_PATCH, stride=_PATCH),
                ChannelsFirstLayerNorm(out_channels, eps=eps),
            ]
        else:
            downsample = [
                ChannelsFirstLayerNorm(in_channels, eps=eps),
                nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2),
            ]
        self.downsample_layers = nn.Sequential(*downsample)
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` to ``(B, out_channels, H / s, W / s)`` (channels-last memory)."""
        return self.layers(self.downsample_layers(x))


class DINOv3ConvNextBackbone(StemAndStages, Backbone):
    """DINOv3 ConvNeXt feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the input image, as in transformers (``num_channels`` channels, stride 1);
    stage ``K`` is the output of stage ``K`` (strides 4, 8, 16, 32 for four stages). ``hidden_states``
    (on request) are every stage's map, the stem's included. A forward runs only up to the deepest
    requested stage (all stages when hidden states are requested).

    For :meth:`freeze_stages`, the stem is the patchify layer (``stages.0.downsample_layers``), as the
    stem of backbones-convnext is; stage 1 is then the first stage's blocks.

    With the default configuration the four stages are 96, 192, 384 and 768 channels wide.
    """

    config_class: ClassVar[type[DINOv3ConvNextConfig]] = DINOv3ConvNextConfig
    lora_target_modules = ("pointwise_conv1", "pointwise_conv2")
    config: DINOv3ConvNextConfig
    has_attentions = False
    # transformers' in-memory names (and so a state dict saved from a model in memory) nest the stages
    # under ``model.``; its files, and the hub's, do not.
    checkpoint_key_renames = ((r"^model\.stages\.", "stages."),)
    input_model_name = "DINOv3 ConvNeXt"

    def __init__(self, config: DINOv3ConvNextConfig) -> None:
        super().__init__(config)
        sizes = config.hidden_sizes
        inputs = [config.num_channels, *sizes[:-1]]
        rates = drop_path_rates(config.drop_path_rate, config.depths)
        self.stages = nn.ModuleList(
            _Stage(
                in_channels,
                width,
                [_Layer(width, config, rate) for rate in stage_rates],
                first=index == 0,
                eps=config.layer_norm_eps,
            )
            for index, (in_channels, width, stage_rates) in enumerate(zip(inputs, sizes, rates))
        )
        self.num_features = [config.num_channels, *sizes]
        self.reductions = [1] + [_PATCH * 2**index for index in range(len(sizes))]
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``DINOv3ConvNextPreTrainedModel`` does."""
        if init_linear_and_norm_(module, self.config.initializer_range):
            return
        if isinstance(module, _Layer):
            nn.init.constant_(module.gamma, self.config.layer_scale_init_value)

    @property
    def minimum_input_size(self) -> int:
        """The deepest stage's stride: each downsampling layer is an unpadded strided convolution."""
        return max(self.reductions)

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return _INPUT_AS_STEM, self.stages

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """The patchify layer (``stages.0.downsample_layers``) for position 0, the first stage's blocks for
        position 1, else stage ``position`` (``stages[position - 1]``: its downsampling layer and blocks)."""
        if position >= 2:
            return [self.stages[position - 1]]
        if not len(self.stages):
            return []  # pruned to the stem, whose own map is the input: no patchify layer is left
        first: _Stage = self.stages[0]  # type: ignore[assignment]  # a ModuleList item is typed Module
        return [first.downsample_layers if position == 0 else first.layers]
