"""Configuration of Hiera. Field names and defaults follow transformers' HieraConfig (hiera-base-224)."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from backbones import BackboneConfig
from backbones.validation import ActivationName, PositivePerStage, RecomputedDerivedKeys, StagesPerDepth

__all__ = ["HieraConfig"]

# Written by transformers to config.json, derived from the fields here: recomputed, never read back.
_DERIVED_FIELDS = ("hidden_size",)


def _pair(value: Any, info: ValidationInfo, *, minimum: int) -> list[int]:
    if len(value) != 2 or any(item < minimum for item in value):
        raise ValueError(
            f"{info.field_name} must be a (height, width) pair of integers >= {minimum} (Hiera is 2-D), got {value}"
        )
    return list(value)


def _square(value: list[int], info: ValidationInfo) -> list[int]:
    if value[0] != value[1]:
        raise ValueError(
            f"{info.field_name} must be a square pair such as [{value[0]}, {value[0]}]: a stage's stride is one "
            f"number, got {value}"
        )
    return value


Pair = Annotated[list[int], AfterValidator(lambda value, info: _pair(value, info, minimum=1))]
"""A ``(height, width)`` pair of positive integers (transformers writes lists)."""
PaddingPair = Annotated[list[int], AfterValidator(lambda value, info: _pair(value, info, minimum=0))]
StridePair = Annotated[
    list[int], AfterValidator(lambda value, info: _pair(value, info, minimum=1)), AfterValidator(_square)
]


class HieraConfig(RecomputedDerivedKeys, StagesPerDepth, BackboneConfig):
    """Configuration of a Hiera backbone; the defaults describe hiera-base-224.

    Stage ``i`` (from 0) is ``int(embed_dim * embed_dim_multiplier**i)`` wide. The first ``num_query_pool``
    stages after the first start by max-pooling ``query_stride`` neighbouring tokens, so their strides are
    ``patch_stride * query_stride**i``; later stages keep the resolution.

    Args:
        embed_dim: Channels of the patch embeddings and of the first stage.
        image_size: Pre-training ``(height, width)``; sizes the table of absolute position embeddings
            (``image_size / patch_stride`` positions per side), resampled for other input sizes.
        patch_size: Kernel of the patch-embedding convolution.
        patch_stride: Stride of the patch-embedding convolution (a square pair): the stride of the stem.
        patch_padding: Zero padding of the patch-embedding convolution.
        mlp_ratio: Hidden width of each block's MLP, relative to the block's width.
        depths: Transformer blocks in each stage.
        num_heads: Attention heads in each stage; each divides its stage's width.
        embed_dim_multiplier: Width ratio of consecutive stages.
        num_query_pool: How many stages (after the first) start with query pooling; less than the stage count.
        query_stride: Window of the query pooling (a square pair), and the factor of each unroll step.
        masked_unit_size: Side of a mask unit in tokens at the first stage: stages with mask-unit attention
            attend within these windows (shrunk by the query pooling of later stages).
        masked_unit_attention: Per stage, whether it attends within mask units (else globally).
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0 (training only).
        num_channels: Input channels.
        hidden_act: Activation of the MLPs (a name of :data:`backbones.activations.ACTIVATIONS`).
        initializer_range: Standard deviation of the truncated-normal initialisation (also the initial bias).
        layer_norm_init: Initial weight of every LayerNorm.
        layer_norm_eps: Epsilon of the LayerNorms inside the blocks (the output norms use 1e-5, as
            transformers' HieraBackbone).
        decoder_hidden_size: Width of the MAE decoder (pre-training only; unused by the backbone).
        decoder_depth: Blocks of the MAE decoder (pre-training only; unused by the backbone).
        decoder_num_heads: Heads of the MAE decoder (pre-training only; unused by the backbone).
        normalize_pixel_loss: Whether the MAE loss normalises target patches (pre-training only).
        mask_ratio: Share of mask units masked in MAE pre-training (pre-training only).
    """

    model_type: ClassVar[str] = "hiera"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset(_DERIVED_FIELDS)
    """Keys of transformers' config.json without effect here: ``hidden_size``, derived from the widths."""

    embed_dim: int = Field(default=96, ge=1)
    image_size: Pair = [224, 224]
    patch_size: Pair = [7, 7]
    patch_stride: StridePair = [4, 4]
    patch_padding: PaddingPair = [3, 3]
    mlp_ratio: float = Field(default=4.0, gt=0)
    depths: PositivePerStage = [2, 3, 16, 3]
    num_heads: PositivePerStage = [1, 2, 4, 8]
    embed_dim_multiplier: float = Field(default=2.0, gt=0)
    num_query_pool: int = Field(default=3, ge=0)
    query_stride: StridePair = [2, 2]
    masked_unit_size: Pair = [8, 8]
    masked_unit_attention: list[bool] = [True, True, False, False]
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    num_channels: int = Field(default=3, ge=1)
    hidden_act: ActivationName = "gelu"
    initializer_range: float = Field(default=0.02, ge=0)
    layer_norm_init: float = 1.0
    layer_norm_eps: float = Field(default=1e-6, gt=0)
    decoder_hidden_size: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None
    normalize_pixel_loss: bool | None = True
    mask_ratio: float = Field(default=0.6, ge=0, le=1)

    # Written to config.json as transformers writes it, so tools that read the file directly find it.
    derived_config_keys: ClassVar[tuple[str, ...]] = _DERIVED_FIELDS

    @model_validator(mode="after")
    def _check_architecture(self) -> HieraConfig:
        stages = len(self.depths)
        if len(self.num_heads) != stages:
            raise ValueError(
                f"num_heads has {len(self.num_heads)} entries but depths has {stages}; give one head count per stage"
            )
        if len(self.masked_unit_attention) != stages:
            raise ValueError(
                f"masked_unit_attention has {len(self.masked_unit_attention)} entries but depths has {stages}; "
                "give one flag per stage"
            )
        for index, (width, heads) in enumerate(zip(self.stage_widths, self.num_heads)):
            if width % heads:
                raise ValueError(
                    f"num_heads[{index}]={heads} must divide stage {index + 1}'s width "
                    f"int(embed_dim * embed_dim_multiplier**{index}) = {width}; change num_heads or embed_dim"
                )
        if self.num_query_pool >= stages:
            raise ValueError(
                f"num_query_pool={self.num_query_pool} must be less than the number of stages ({stages}): "
                f"use 0 to {stages - 1}"
            )
        steps = self.query_stride[0] ** (stages - 1)
        if any(side % steps for side in self.masked_unit_size):
            raise ValueError(
                f"masked_unit_size {self.masked_unit_size} must be divisible by query_stride**(stages - 1) = "
                f"{self.query_stride[0]}**{stages - 1} = {steps} in each direction (the tokens are unrolled "
                f"{stages - 1} times); use a multiple of {steps}"
            )
        for kernel, padding in zip(self.patch_size, self.patch_padding):
            low, high = kernel - self.patch_stride[0], kernel - 1
            if not low <= 2 * padding <= high:
                raise ValueError(
                    f"patch_padding {self.patch_padding} with patch_size {self.patch_size} and patch_stride "
                    f"{self.patch_stride} does not give exactly size / patch_stride tokens per side; choose "
                    f"2 * patch_padding between patch_size - patch_stride and patch_size - 1 ({max(low, 0)} to {high})"
                )
        multiple = self.input_multiple
        if any(side % step for side, step in zip(self.image_size, multiple)):
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_stride * masked_unit_size = "
                f"{multiple} (whole mask units of whole patches); round it to a multiple"
            )
        return self

    @property
    def stage_widths(self) -> list[int]:
        """Channels of each stage after the stem."""
        return [int(self.embed_dim * self.embed_dim_multiplier**index) for index in range(len(self.depths))]

    @property
    def stage_strides(self) -> list[int]:
        """Stride of each stage after the stem: query pooling divides the resolution in the first stages only."""
        return [
            self.patch_stride[0] * self.query_stride[0] ** min(index, self.num_query_pool)
            for index in range(len(self.depths))
        ]

    @property
    def input_multiple(self) -> tuple[int, int]:
        """Input ``(height, width)`` must be multiples of this: whole mask units of whole patches."""
        return (
            self.patch_stride[0] * self.masked_unit_size[0],
            self.patch_stride[1] * self.masked_unit_size[1],
        )

    @property
    def minimum_input_size(self) -> int:
        """The smallest input height and width: one mask unit of patches (core refuses smaller inputs)."""
        return max(self.input_multiple)

    @property
    def position_grid(self) -> tuple[int, int]:
        """Rows and columns of the position table: the patch grid of ``image_size``."""
        return self.image_size[0] // self.patch_stride[0], self.image_size[1] // self.patch_stride[1]

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage (transformers' derived ``hidden_size``)."""
        return self.stage_widths[-1]

    @property
    def window_tokens(self) -> int:
        """Tokens of a mask unit at the first stage."""
        return math.prod(self.masked_unit_size)
