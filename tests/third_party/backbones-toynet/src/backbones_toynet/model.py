"""ToyNet: a stride-2 conv stem and stride-2 conv/BatchNorm/ReLU stages."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator
from torch import Tensor, nn

from backbones import Backbone, BackboneConfig
from backbones.layers import CheckpointableLayer, check_pixel_channels


class ToyNetConfig(BackboneConfig):
    model_type: ClassVar[str] = "toynet"

    num_channels: int = 3
    widths: list[int] = [8, 16, 32]

    @field_validator("widths")
    @classmethod
    def _positive(cls, widths: list[int]) -> list[int]:
        if not widths or min(widths) <= 0:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}")
        return widths

    @property
    def stage_names(self) -> list[str]:
        return ["stem"] + [f"stage{index}" for index in range(1, len(self.widths) + 1)]


class ToyStage(CheckpointableLayer, nn.Sequential):
    """conv/BatchNorm/ReLU; checkpointable, so gradient checkpointing works."""


class ToyNetBackbone(Backbone):
    config_class = ToyNetConfig
    base_model_prefix = "toynet"
    has_attentions = False

    def __init__(self, config: ToyNetConfig) -> None:
        super().__init__(config)
        self.stem = nn.Conv2d(config.num_channels, config.widths[0], 3, stride=2, padding=1)
        inputs = [config.widths[0], *config.widths[:-1]]
        self.stages = nn.ModuleList(
            ToyStage(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
            for a, b in zip(inputs, config.widths)
        )
        self.num_features = [config.widths[0], *config.widths]
        self.reductions = [2 ** (index + 1) for index in range(len(config.widths) + 1)]
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ):
        check_pixel_channels(pixel_values, self.config.num_channels, "ToyNet")
        hidden = self.stem(pixel_values)
        maps: list[Tensor | None] = [hidden]
        for stage in self.stages[:last_stage]:
            hidden = stage(hidden)
            maps.append(hidden)
        return maps, tuple(maps) if output_hidden_states else None, None

    def _stage_modules(self, position: int) -> list[nn.Module]:
        return [self.stem] if position == 0 else [self.stages[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self.stages[last_stage:]
