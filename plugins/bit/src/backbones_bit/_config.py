"""Configuration of BiT. Field names and defaults follow transformers' BitConfig (bit-50)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from backbones import BackboneConfig
from backbones.activations import ACTIVATIONS
from backbones.validation import (
    ActivationName,
    OutputStride,
    PositivePerStage,
    StagesPerDepth,
    check_choice,
    check_hidden_sizes_per_stage,
)

__all__ = ["ACTIVATIONS", "LAYER_TYPES", "PADDINGS", "BitConfig", "StagePlan", "round_channels"]

LAYER_TYPES = ("preactivation", "bottleneck")
"""Block kinds: ResNetV2 pre-activation bottlenecks (BiT), or post-activation ones (ViT-hybrid stems)."""

PADDINGS = (None, "SAME")
"""Supported ``global_padding`` values (any letter case)."""

"""Supported values of ``hidden_act``."""


def round_channels(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor`` (at least ``divisor``), never more than 10% below it.

    The channel rule of BiT's reference code, which transformers and timm share.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class StagePlan:
    """Shape of one stage, derived from the config.

    Attributes:
        channels: Output channels (``hidden_sizes[i] * width_factor``, rounded to a multiple of 8).
        bottleneck_channels: Channels inside each block (a quarter of ``channels``, rounded likewise).
        stride: Stride of the stage's first block (1 for the first stage and once ``output_stride`` is reached).
        dilation: Dilation of the 3x3 convolutions of the stage's later blocks (bottleneck blocks only).
        first_dilation: Dilation of the 3x3 convolution of the stage's first block (bottleneck blocks only).
        reduction: Stride of the stage's output relative to the input.
    """

    channels: int
    bottleneck_channels: int
    stride: int
    dilation: int
    first_dilation: int
    reduction: int


class BitConfig(StagesPerDepth, BackboneConfig):
    """Configuration of a BiT backbone (defaults: BiT-R50x1 layout, as transformers' ``BitConfig()``).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``.

    Args:
        num_channels: Channels of the input images.
        embedding_size: Output channels of the stem (a 7x7 stride-2 weight-standardised convolution,
            then a 3x3 stride-2 max-pool).
        hidden_sizes: Output channels of each stage, before ``width_factor``.
        depths: Number of bottleneck blocks in each stage; as long as ``hidden_sizes``.
        layer_type: ``"preactivation"`` (norm and activation before each convolution, BiT's ResNetV2) or
            ``"bottleneck"`` (after, as in ResNet v1.5; used by ViT-hybrid).
        hidden_act: Activation after each group norm (a name of :data:`ACTIVATIONS`).
        global_padding: ``None`` pads every convolution symmetrically by ``(stride - 1 + dilation * (k - 1)) // 2``;
            ``"SAME"`` pads as TensorFlow does, computing an asymmetric padding from each input size where
            a static one cannot keep ``ceil(size / stride)`` (strided convolutions).
        num_groups: Groups of every group norm; it must divide every normalised channel count.
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0 (training only).
        embedding_dynamic_padding: Pad the stem's max-pool TensorFlow-"SAME"-style (with zeros) for each
            input size; without it the pool does not pad.
        output_stride: Largest stride of any stage, 8, 16 or 32 (the default: none dilated); deeper stages
            keep it (stride 1). Bottleneck blocks then dilate their 3x3 convolutions instead; pre-activation
            blocks do not (as in transformers, whose checkpoints this follows; timm's ResNetV2 dilates them).
        width_factor: Multiplier of every stage's channels (not of the stem's).

    The stem pads its convolution output by one pixel of zeros unless ``global_padding`` is ``"SAME"``.
    """

    model_type: ClassVar[str] = "bit"

    num_channels: int = Field(default=3, ge=1)
    embedding_size: int = Field(default=64, ge=1)
    hidden_sizes: PositivePerStage = [256, 512, 1024, 2048]
    depths: PositivePerStage = [3, 4, 6, 3]
    layer_type: str = "preactivation"
    hidden_act: ActivationName = "relu"
    global_padding: str | None = None
    num_groups: int = Field(default=32, ge=1)
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    embedding_dynamic_padding: bool = False
    output_stride: OutputStride = 32
    width_factor: int = Field(default=1, ge=1)

    @field_validator("layer_type")
    @classmethod
    def _known_layer_type(cls, value: str) -> str:
        return check_choice(
            "layer_type", value, LAYER_TYPES, "'preactivation' for BiT, 'bottleneck' for ViT-hybrid stems"
        )

    @field_validator("global_padding")
    @classmethod
    def _known_padding(cls, value: str | None) -> str | None:
        if value is None:
            return None
        upper = value.upper()  # transformers stores it upper-cased
        if upper == "VALID":
            raise ValueError(
                "global_padding 'VALID' cannot work: unpadded 3x3 convolutions shrink every residual branch below "
                "its shortcut (transformers accepts it, then fails in the forward); set global_padding to None or 'SAME'"
            )
        if upper not in PADDINGS:
            raise ValueError(f"global_padding {value!r} is not supported; set global_padding to None or 'SAME'")
        return upper

    @model_validator(mode="after")
    def _consistent_stages(self) -> BitConfig:
        check_hidden_sizes_per_stage(self.hidden_sizes, self.depths)
        normalised = [("embedding_size", self.embedding_size)]
        for index, plan in enumerate(self.stage_plans, start=1):
            normalised += [
                (f"stage{index} channels", plan.channels),
                (f"stage{index} bottleneck", plan.bottleneck_channels),
            ]
        for name, channels in normalised:
            if channels % self.num_groups:
                raise ValueError(
                    f"num_groups={self.num_groups} does not divide the {channels} channels of {name}; "
                    "every group norm needs whole groups: choose num_groups dividing all of "
                    f"{sorted({channels for _, channels in normalised})}"
                )
        return self

    @property
    def stage_plans(self) -> list[StagePlan]:
        """Channels, strides and dilations of every stage after the stem, as transformers derives them."""
        plans = []
        reduction, dilation = 4, 1
        for index, hidden_size in enumerate(self.hidden_sizes):
            channels = round_channels(hidden_size * self.width_factor)
            stride = 1 if index == 0 else 2
            if reduction >= self.output_stride:
                dilation, stride = dilation * stride, 1
            reduction *= stride
            plans.append(
                StagePlan(
                    channels=channels,
                    bottleneck_channels=round_channels(channels * 0.25),
                    stride=stride,
                    dilation=dilation,
                    first_dilation=1 if dilation in (1, 2) else 2,
                    reduction=reduction,
                )
            )
        return plans
