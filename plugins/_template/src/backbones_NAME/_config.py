"""Configuration of NAME. Field names and defaults follow transformers' NAMEConfig."""

from __future__ import annotations

from typing import ClassVar

from backbones import BackboneConfig


class NAMEConfig(BackboneConfig):
    """Configuration of a NAME backbone.

    Args:
        num_channels: Input channels.
        hidden_sizes: Channels of each stage.
    """

    model_type: ClassVar[str] = "NAME"

    num_channels: int = 3
    hidden_sizes: list[int] = [64, 128, 256, 512]

    @property
    def stage_names(self) -> list[str]:
        return ["stem"] + [f"stage{index}" for index in range(1, len(self.hidden_sizes) + 1)]
