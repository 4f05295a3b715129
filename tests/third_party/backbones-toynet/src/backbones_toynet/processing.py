"""ToyNet's own image processor: ToyNet was trained on BGR images, 32x32, scaled to [-1, 1].

backbones-core has no such processor; the plugin implements it and declares it when it registers
(``image_processor_classes``), so ``AutoImageProcessor`` builds it for ToyNet checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from backbones import ConfigError, ImageProcessor

__all__ = ["ToyNetImageProcessor"]


@dataclasses.dataclass(frozen=True)
class ToyNetImageProcessor(ImageProcessor):
    """Resize to 32x32 (nearest), scale to [-1, 1], and reverse the channels (RGB to BGR).

    Args:
        do_reverse_channels: Reverse the channel order after normalising (ToyNet expects BGR).
    """

    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 32, "width": 32})
    resample: int = 0
    image_mean: float | tuple[float, ...] | None = (0.5, 0.5, 0.5)
    image_std: float | tuple[float, ...] | None = (0.5, 0.5, 0.5)
    do_reverse_channels: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.do_reverse_channels, bool):
            raise ConfigError(f"do_reverse_channels={self.do_reverse_channels!r} must be true or false")

    def postprocess(self, pixels: Any) -> Any:
        return pixels[::-1] if self.do_reverse_channels else pixels

    def describe(self) -> str:
        return super().describe() + (", reverse the channels (RGB to BGR)" if self.do_reverse_channels else "")
