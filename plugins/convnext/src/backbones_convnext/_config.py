"""Configuration of ConvNeXt. Field names and defaults follow transformers' ConvNextConfig (convnext-tiny-224).

:class:`ConvNextFamilyConfig` holds what ConvNeXt and ConvNeXt V2 share; backbones-convnextv2 builds its
config on it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig, ConfigError
from backbones.activations import ACTIVATIONS
from backbones.validation import (
    ActivationName,
    DilatedStage,
    OutputStride,
    PositivePerStage,
    StagesPerDepth,
    check_hidden_sizes_per_stage,
    dilate_stages,
    square_patch,
)

__all__ = ["ACTIVATIONS", "ConvNextConfig", "ConvNextFamilyConfig"]

"""Supported values of ``hidden_act``."""


class ConvNextFamilyConfig(StagesPerDepth, BackboneConfig):
    """Fields shared by ConvNeXt and ConvNeXt V2 (a base class; use a concrete subclass).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``; ``"stem"`` is the
    normalised patch embedding.

    Args:
        num_channels: Channels of the input images.
        patch_size: Side of the square patches the stem embeds (its stride); ``[p, p]`` is accepted.
        hidden_sizes: Channels of each stage.
        depths: Number of blocks in each stage; as long as ``hidden_sizes``.
        hidden_act: Activation between the two pointwise layers of a block (a name of :data:`ACTIVATIONS`).
        initializer_range: Standard deviation of the normal initialisation of convolution and linear weights.
        layer_norm_eps: Epsilon of transformers' final pooled LayerNorm, which a backbone never runs (kept
            for round trips; every norm of the backbone uses 1e-6, as transformers does).
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0 (training only).
        image_size: Pre-training image size; informational, the backbone takes any size.
        output_stride: Largest stride of any stage, 8, 16 or 32 (the default: none dilated). Below 32, the
            stages past it keep the resolution: their downsampling convolution gets stride 1 and their
            depthwise convolutions a dilation (timm's ``output_stride``); the weights are the same. Not a
            transformers field (transformers keeps it as an unknown attribute of a saved config).

    ``num_stages`` (written to ``config.json`` as transformers does) is ``len(depths)``; a ``config.json``
    whose ``num_stages`` disagrees is rejected.
    """

    num_channels: int = Field(default=3, ge=1)
    patch_size: Annotated[int, square_patch(4)] = Field(default=4, ge=1)
    hidden_sizes: PositivePerStage = [96, 192, 384, 768]
    depths: PositivePerStage = [3, 3, 9, 3]
    hidden_act: ActivationName = "gelu"
    initializer_range: float = Field(default=0.02, ge=0)
    layer_norm_eps: float = 1e-12
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    image_size: int | list[int] = 224
    output_stride: OutputStride = 32

    derived_config_keys: ClassVar[tuple[str, ...]] = ("num_stages",)  # transformers reads it back to size its encoder

    def __init__(self, /, **data: Any) -> None:
        num_stages = data.pop("num_stages", None)
        super().__init__(**data)
        if num_stages is not None and num_stages != len(self.depths):
            raise ConfigError(
                f"invalid {type(self).__name__}: num_stages={num_stages!r}: it must equal len(depths) = "
                f"{len(self.depths)}; drop num_stages (it is derived from depths) or give one depth per stage"
            )

    @model_validator(mode="after")
    def _one_size_per_stage(self) -> ConvNextFamilyConfig:
        check_hidden_sizes_per_stage(self.hidden_sizes, self.depths)
        self.stage_plans  # noqa: B018 -- validates output_stride against the stem's stride (patch_size)
        return self

    @property
    def stage_plans(self) -> list[DilatedStage]:
        """Stride, dilations and reduction of every stage after the stem (of stride ``patch_size``), under
        ``output_stride``."""
        strides = [1] + [2] * (len(self.depths) - 1)
        return dilate_stages(strides, self.output_stride, stem_stride=self.patch_size)

    @property
    def num_stages(self) -> int:
        """Number of stages after the stem (transformers' ``num_stages``), ``len(depths)``."""
        return len(self.depths)


class ConvNextConfig(ConvNextFamilyConfig):
    """Configuration of a ConvNeXt backbone (defaults: ConvNeXt-T, as transformers' ``ConvNextConfig()``).

    Args:
        layer_scale_init_value: Initial value of each block's per-channel output scale; ``0`` (or less)
            builds blocks without one, as transformers does.
        **fields: See :class:`ConvNextFamilyConfig`.
    """

    model_type: ClassVar[str] = "convnext"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"num_stages"})
    """Keys of transformers' config.json without effect here: transformers' count of depths."""

    layer_scale_init_value: float = 1e-6
