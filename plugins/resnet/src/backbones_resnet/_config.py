"""Configuration of ResNet. Field names and defaults follow transformers' ResNetConfig (resnet-50)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import field_validator, model_validator

from backbones import BackboneConfig
from backbones.activations import ACTIVATIONS
from backbones.validation import (
    ActivationName,
    DilatedStage,
    OutputStride,
    PositivePerStage,
    StagesPerDepth,
    check_choice,
    check_hidden_sizes_per_stage,
    dilate_stages,
)

__all__ = ["ACTIVATIONS", "LAYER_TYPES", "ResNetConfig"]

LAYER_TYPES = ("basic", "bottleneck")
"""Residual block kinds: two 3x3 convolutions, or 1x1 -> 3x3 -> 1x1 with a 4x narrower middle."""

"""Supported values of ``hidden_act``."""


class ResNetConfig(StagesPerDepth, BackboneConfig):
    """Configuration of a ResNet backbone (defaults: ResNet-50).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``.

    Args:
        num_channels: Channels of the input images.
        embedding_size: Output channels of the stem (7x7 stride-2 convolution, then a stride-2 max-pool).
        hidden_sizes: Output channels of each stage.
        depths: Number of residual blocks in each stage; as long as ``hidden_sizes``.
        layer_type: ``"basic"`` (ResNet-18/34 blocks) or ``"bottleneck"`` (ResNet-50 and deeper).
        hidden_act: Activation of the stem and of each block's output (a name of :data:`ACTIVATIONS`).
            As in transformers, the activations inside a block are always ReLU.
        downsample_in_first_stage: Halve the resolution in the first stage too (stride 2 instead of 1).
        downsample_in_bottleneck: In bottleneck blocks, put the stride on the first 1x1 convolution
            instead of the 3x3 one (the original paper's placement; torchvision's "v1.5" uses the 3x3).
        output_stride: Largest stride of any stage, 8, 16 or 32 (the default: none dilated). Below 32, the
            stages past it keep the resolution and dilate their 3x3 convolutions instead (DeepLab's rule,
            timm's ``output_stride``); the weights are the same. Not a transformers field (transformers
            keeps it as an unknown attribute of a saved config).
    """

    model_type: ClassVar[str] = "resnet"

    num_channels: int = 3
    embedding_size: int = 64
    hidden_sizes: PositivePerStage = [256, 512, 1024, 2048]
    depths: PositivePerStage = [3, 4, 6, 3]
    layer_type: str = "bottleneck"
    hidden_act: ActivationName = "relu"
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False
    output_stride: OutputStride = 32

    @field_validator("layer_type")
    @classmethod
    def _known_layer_type(cls, value: str) -> str:
        return check_choice(
            "layer_type", value, LAYER_TYPES, "'basic' for ResNet-18/34, 'bottleneck' for ResNet-50 and deeper"
        )

    @model_validator(mode="after")
    def _one_size_per_stage(self) -> ResNetConfig:
        check_hidden_sizes_per_stage(self.hidden_sizes, self.depths)
        self.stage_plans  # noqa: B018 -- validates output_stride against the stem's stride
        return self

    @property
    def stage_plans(self) -> list[DilatedStage]:
        """Stride, dilations and reduction of every stage after the stem (stem stride 4), under ``output_stride``."""
        strides = [2 if self.downsample_in_first_stage else 1] + [2] * (len(self.depths) - 1)
        return dilate_stages(strides, self.output_stride, stem_stride=4)
