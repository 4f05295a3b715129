"""UVDoc's backbone. Paper: UVDoc: Neural Grid-based Document Unwarping (Verhoeven et al., SIGGRAPH Asia 2023),
https://arxiv.org/abs/2302.02887; the PaddlePaddle port (PP-OCR's document unwarping) is what transformers holds.

A small dilated ResNet (stride 16 by default) followed by parallel "bridges" of dilated 3x3 convolutions of
growing dilation, each reading the ResNet's map: the stages are the ResNet's output (``"stem"``) and each
bridge's output, all of one size and width, which UVDoc concatenates to predict its unwarping grid.

Module attribute names are the checkpoint's key names: they reproduce transformers' ``UVDocBackbone`` state dict
(``resnet.resnet_down.1.layers.0.conv_down.convolution.weight``, ``bridge.bridge.3.blocks.2.normalization.bias``,
...), so its checkpoints (and the backbone inside ``UVDocModel``, under ``backbone.``) load unchanged and ours
load into it.
"""

from __future__ import annotations

from torch import Tensor, nn

from backbones import Backbone, InputError
from backbones.layers import (
    BlockSequence,
    CheckpointableLayer,
    ConvNormActivation,
    StemAndStages,
    init_conv_and_batch_norm_,
)

from ._config import UVDocBackboneConfig

__all__ = ["UVDocBackbone"]


class UVDocResidualBlock(CheckpointableLayer):
    """Two dilated ``kernel_size`` conv-BN layers (``conv_start`` with ReLU and the stride, ``conv_final``
    without), plus the shortcut (``conv_down``, a strided conv-BN, when downsampling; else the input), then
    a ReLU."""

    conv_down: nn.Module | None

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, dilation: int, downsample: bool
    ) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        # Every unit pads by ``dilation * (kernel_size // 2)`` (ConvNormActivation's default), as UVDoc does.
        self.conv_down = (
            ConvNormActivation(in_channels, out_channels, kernel_size, stride, bias=True) if downsample else None
        )
        self.conv_start = ConvNormActivation(
            in_channels, out_channels, kernel_size, stride, dilation=dilation, bias=True, activation="relu"
        )
        self.conv_final = ConvNormActivation(out_channels, out_channels, kernel_size, dilation=dilation, bias=True)
        self.act_fn = nn.ReLU(inplace=True)

    def forward(self, hidden: Tensor) -> Tensor:
        shortcut = self.conv_down(hidden) if self.conv_down is not None else hidden
        return self.act_fn(self.conv_final(self.conv_start(hidden)) + shortcut)


class UVDocResNet(nn.Module):
    """The trunk: stride-2 conv-BN-ReLU head layers (``resnet_head``), then the residual stages (``resnet_down``)."""

    def __init__(self, config: UVDocBackboneConfig) -> None:
        super().__init__()
        self.resnet_head = nn.Sequential(
            *(
                ConvNormActivation(in_channels, out_channels, config.kernel_size, 2, activation="relu")
                for in_channels, out_channels in config.resnet_head
            )
        )
        # Each stage holds its residual blocks under ``layers``.
        self.resnet_down = nn.Sequential(
            *(
                BlockSequence(
                    UVDocResidualBlock(
                        in_channels, out_channels, config.kernel_size, dilation=dilation, downsample=bool(downsample)
                    )
                    for in_channels, out_channels, dilation, downsample in stage
                )
                for stage in config.resnet_configs
            )
        )

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.resnet_down(self.resnet_head(pixel_values))


class UVDocBridgeBlock(CheckpointableLayer):
    """One bridge: 3x3 conv-BN-ReLU layers of the given dilations, each keeping the map (key ``blocks``)."""

    def __init__(self, layers: list[tuple[int, int]]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                ConvNormActivation(channels, channels, 3, dilation=dilation, activation="relu")
                for channels, dilation in layers
            )
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.blocks(hidden)


class UVDocBridge(nn.Module):
    """The bridges (key ``bridge``), run side by side on the trunk's map."""

    def __init__(self, config: UVDocBackboneConfig) -> None:
        super().__init__()
        self.bridge = nn.ModuleList(UVDocBridgeBlock(list(layers)) for layers in config.stage_configs)


class UVDocBackbone(StemAndStages, Backbone):
    """UVDoc's feature extractor with transformers-compatible state-dict keys.

    Stage 0 (``"stem"``) is the dilated ResNet's output; stage ``i`` is bridge ``i`` applied to it. The bridges
    are independent, so a forward runs the trunk and only the requested bridges (all of them when hidden
    states are requested). :meth:`reparameterize` folds every BatchNorm into its convolution for inference.

    With the default configuration every bridge returns 128 channels at 1/16 of the input's resolution (rounded
    up), so the six bridges concatenated along channels give the 768-channel map UVDoc's head reads.
    """

    config_class = UVDocBackboneConfig
    base_model_prefix = "backbone"
    has_attentions = False
    # None: peft's LoRA for convolutions builds its low-rank convolution without the base layer's dilation, so
    # it cannot adapt the dilated residual and bridge convolutions that make most of UVDoc.
    lora_target_modules = ()
    config: UVDocBackboneConfig

    def __init__(self, config: UVDocBackboneConfig) -> None:
        super().__init__(config)
        self.resnet = UVDocResNet(config)
        self.bridge = UVDocBridge(config)
        self.num_features = [config.trunk_channels] * len(config.stage_names)
        self.reductions = [config.reduction] * len(config.stage_names)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module`` as transformers' UVDocPreTrainedModel does (its base class's rule, std 0.02)."""
        init_conv_and_batch_norm_(module, 0.02)

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, None]:
        expected = self.config.resnet_head[0][0]
        if pixel_values.shape[1] != expected:
            raise InputError(
                f"pixel_values has {pixel_values.shape[1]} channels but this UVDoc backbone expects {expected} "
                "(config.resnet_head[0][0]); convert the images or load a model built for that many channels"
            )
        trunk = self.resnet(pixel_values)
        stage_maps: list[Tensor | None] = [trunk] + [None] * (len(self.stage_names) - 1)
        wanted = set(self.out_positions)
        for position, bridge in enumerate(self.bridge.bridge, start=1):
            if position > last_stage:
                break
            if output_hidden_states or position in wanted:
                stage_maps[position] = bridge(trunk)
        states = tuple(stage_maps[: last_stage + 1]) if output_hidden_states else None
        return stage_maps, states, None  # type: ignore[return-value]

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        return self.resnet, self.bridge.bridge
