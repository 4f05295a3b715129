"""Configuration of DINOv3 ConvNeXt. Field names and defaults follow transformers' DINOv3ConvNextConfig
(dinov3-convnext-tiny)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from backbones import BackboneConfig
from backbones.validation import ActivationName, PositivePerStage, StagesPerDepth, check_hidden_sizes_per_stage

__all__ = ["DINOv3ConvNextConfig"]


class DINOv3ConvNextConfig(StagesPerDepth, BackboneConfig):
    """Configuration of a DINOv3 ConvNeXt backbone; the defaults describe ConvNeXt-T (dinov3-convnext-tiny).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``. As in transformers'
    ``DINOv3ConvNextBackbone``, ``"stem"`` is the input image itself (``num_channels`` channels, stride 1);
    ``stageK`` is the output of stage ``K``, whose first layer is the 4x4 stride-4 patchify convolution for
    the first stage and a 2x2 stride-2 convolution for the others.

    Args:
        num_channels: Channels of the input images.
        hidden_sizes: Channels of each stage.
        depths: Number of blocks in each stage; as long as ``hidden_sizes``.
        hidden_act: Activation between the two pointwise layers of a block.
        initializer_range: Standard deviation of the normal initialisation of convolution and linear weights.
        layer_norm_eps: Epsilon of every layer norm (those of the blocks and of the downsampling layers).
        layer_scale_init_value: Initial value of each block's per-channel output scale (``gamma``). Every
            block has one, as in transformers, whatever the value.
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0 (training only).
        image_size: Pre-training image size; recorded for transformers, it sizes nothing here.
    """

    model_type: ClassVar[str] = "dinov3_convnext"

    num_channels: int = Field(default=3, ge=1)
    hidden_sizes: PositivePerStage = [96, 192, 384, 768]
    depths: PositivePerStage = [3, 3, 9, 3]
    hidden_act: ActivationName = "gelu"
    initializer_range: float = Field(default=0.02, ge=0)
    layer_norm_eps: float = Field(default=1e-6, gt=0)
    layer_scale_init_value: float = 1e-6
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    image_size: int | list[int] = 224

    @field_validator("image_size")
    @classmethod
    def _positive_image_size(cls, value: int | list[int]) -> int | list[int]:
        sides = value if isinstance(value, list) else [value]
        if len(sides) not in (1, 2) or any(side < 1 for side in sides):
            raise ValueError(f"image_size must be a positive int or a [height, width] pair of them, got {value}")
        return value

    @model_validator(mode="after")
    def _one_size_per_stage(self) -> DINOv3ConvNextConfig:
        check_hidden_sizes_per_stage(self.hidden_sizes, self.depths)
        return self

    @property
    def num_stages(self) -> int:
        """Number of stages after the stem (transformers' ``num_stages``), ``len(depths)``."""
        return len(self.depths)
