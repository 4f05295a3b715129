"""Configuration of UVDoc's backbone. Field names and defaults follow transformers' UVDocBackboneConfig
(PaddlePaddle/UVDoc)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig

__all__ = ["UVDocBackboneConfig"]

# The residual blocks pad by 2 x dilation, which keeps a map's size (or halves it exactly) for this kernel only.
KERNEL_SIZE = 5


def _default_resnet_configs() -> list[list[tuple[int, int, int, bool]]]:
    return [
        [(32, 32, 1, False), (32, 32, 3, False), (32, 32, 3, False)],
        [(32, 64, 1, True), (64, 64, 3, False), (64, 64, 3, False), (64, 64, 3, False)],
        [(64, 128, 1, True), *[(128, 128, 3, False)] * 5],
    ]


def _default_stage_configs() -> list[list[tuple[int, int]]]:
    return [
        [(128, 1)],
        [(128, 2)],
        [(128, 5)],
        [(128, 8), (128, 3), (128, 2)],
        [(128, 12), (128, 7), (128, 4)],
        [(128, 18), (128, 12), (128, 6)],
    ]


class UVDocBackboneConfig(BackboneConfig):
    """Configuration of UVDoc's backbone; the defaults are those of the PaddlePaddle/UVDoc checkpoint.

    The trunk (stage ``"stem"``) is a chain of stride-2 conv-BN-ReLU layers (``resnet_head``) and then
    residual stages of dilated blocks (``resnet_configs``). Each later stage is a "bridge": a chain of 3x3
    dilated conv-BN-ReLU layers applied to the trunk's output; the bridges run side by side (each reads
    the trunk's map, not the previous bridge's), and UVDoc concatenates their maps.

    Args:
        resnet_head: ``[in_channels, out_channels]`` of each stride-2 head layer; the first takes the image
            channels (3), each next one the previous one's output.
        resnet_configs: Per residual stage, ``[in_channels, out_channels, dilation, downsample]`` of each
            block; ``downsample`` blocks have stride 2 and a projected shortcut, the others keep the shape
            (so their ``in_channels`` must equal ``out_channels``).
        stage_configs: Per bridge, ``[channels, dilation]`` of each layer; the channels are the trunk's
            output channels.
        kernel_size: Kernel of the head and residual convolutions (5: the only size whose padding the
            residual blocks are written for).
    """

    model_type: ClassVar[str] = "uvdoc_backbone"
    # transformers writes the layer count of each bridge, which follows from stage_configs.
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"depths"})
    derived_config_keys: ClassVar[tuple[str, ...]] = ("depths",)  # as transformers writes it

    resnet_head: list[list[int]] = Field(default_factory=lambda: [[3, 32], [32, 32]])
    resnet_configs: list[list[tuple[int, int, int, bool]]] = Field(default_factory=_default_resnet_configs)
    stage_configs: list[list[tuple[int, int]]] = Field(default_factory=_default_stage_configs)
    kernel_size: int = KERNEL_SIZE

    @model_validator(mode="after")
    def _check_layers(self) -> UVDocBackboneConfig:
        if self.kernel_size != KERNEL_SIZE:
            raise ValueError(
                f"kernel_size={self.kernel_size} must be {KERNEL_SIZE}: the residual blocks pad by 2 x dilation, "
                f"which keeps the map's size for a {KERNEL_SIZE}-wide kernel only"
            )
        if not self.resnet_head:
            raise ValueError("resnet_head is empty; give at least one [in_channels, out_channels] layer")
        channels: int | None = None
        for index, layer in enumerate(self.resnet_head):
            if len(layer) != 2 or any(value < 1 for value in layer):
                raise ValueError(f"resnet_head[{index}]={layer} must be [in_channels, out_channels], both 1 or more")
            if channels is not None and layer[0] != channels:
                raise ValueError(
                    f"resnet_head[{index}] takes {layer[0]} channels but resnet_head[{index - 1}] gives {channels}"
                )
            channels = layer[1]
        if not self.resnet_configs:
            raise ValueError("resnet_configs is empty; give at least one residual stage")
        for stage, blocks in enumerate(self.resnet_configs):
            if not blocks:
                raise ValueError(f"resnet_configs[{stage}] is empty; a residual stage needs at least one block")
            for index, (in_channels, out_channels, dilation, downsample) in enumerate(blocks):
                where = f"resnet_configs[{stage}][{index}]"
                if in_channels != channels:
                    raise ValueError(f"{where} takes {in_channels} channels but the layer before gives {channels}")
                if out_channels < 1 or dilation < 1:
                    raise ValueError(f"{where}: out_channels={out_channels} and dilation={dilation} must be 1 or more")
                if not downsample and in_channels != out_channels:
                    raise ValueError(
                        f"{where} changes the width ({in_channels} -> {out_channels}) without downsample, so its "
                        "shortcut (the identity) cannot be added; set downsample to true or keep the width"
                    )
                channels = out_channels
        if not self.stage_configs:
            raise ValueError("stage_configs is empty; give at least one bridge")
        for stage, layers in enumerate(self.stage_configs):
            if not layers:
                raise ValueError(f"stage_configs[{stage}] is empty; a bridge needs at least one layer")
            for index, (width, dilation) in enumerate(layers):
                if width != channels:
                    raise ValueError(
                        f"stage_configs[{stage}][{index}] has {width} channels but every bridge layer keeps the "
                        f"trunk's {channels} (resnet_configs' last out_channels)"
                    )
                if dilation < 1:
                    raise ValueError(f"stage_configs[{stage}][{index}]: dilation={dilation} must be 1 or more")
        return self

    @property
    def trunk_channels(self) -> int:
        """Channels of the trunk's output and of every bridge (``resnet_configs``' last ``out_channels``)."""
        return self.resnet_configs[-1][-1][1]

    @property
    def stage_names(self) -> list[str]:
        return ["stem", *(f"stage{index}" for index in range(1, len(self.stage_configs) + 1))]

    @property
    def depths(self) -> list[int]:
        """Layers in each bridge (derived from ``stage_configs``)."""
        return [len(layers) for layers in self.stage_configs]

    @property
    def reduction(self) -> int:
        """Stride of every stage's map: 2 per head layer and per downsampling block."""
        downsampling = sum(block[3] for blocks in self.resnet_configs for block in blocks)
        return int(2 ** (len(self.resnet_head) + downsampling))
