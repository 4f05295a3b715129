"""Configurations of PP-LCNet, PP-LCNetV3 and PP-LCNetV4. Field names and defaults follow transformers'
``PPLCNetConfig``, ``PPLCNetV3Config`` and ``PPLCNetV4Config``.

Each network is a stem and stages of depthwise-separable blocks described by ``block_configs``: one list per
stage, one ``[kernel_size, in_channels, out_channels, stride, use_squeeze_excitation]`` entry per block. A
stride is an int or a ``[height, width]`` pair (the text-recognition variants halve the height only).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from backbones import BackboneConfig
from backbones.validation import ActivationName, check_stem_channels, numbered_stage_names

__all__ = [
    "PPLCNetConfig",
    "PPLCNetV3Config",
    "PPLCNetV4Config",
    "SCALES",
    "make_divisible",
    "stride_pair",
]

Stride = int | list[int]
BlockConfig = list[Any]

SCALES = (0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)
"""The width multipliers of PaddleClas' published PP-LCNet models (``PPLCNet_x0_25`` ... ``PPLCNet_x2_5``);
any positive ``scale`` builds."""


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below it.

    The channel rule of the PP-LCNet family (and MobileNet's): a block's ``in_channels * scale``.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def stride_pair(stride: Stride) -> tuple[int, int]:
    """``(height, width)`` of a stride given as an int or as a pair."""
    if isinstance(stride, int):
        return stride, stride
    return int(stride[0]), int(stride[1])


def _check_stride(value: Any, where: str) -> Stride:
    if isinstance(value, bool):
        raise ValueError(f"{where}={value!r} must be a positive int or a [height, width] pair of them")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{where}={value} must be a positive int or a [height, width] pair of them")
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        if all(isinstance(item, int) and not isinstance(item, bool) and item >= 1 for item in value):
            return [int(value[0]), int(value[1])]
    raise ValueError(f"{where}={value!r} must be a positive int or a [height, width] pair of them")


def _check_scale(value: Any, why: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"scale={value!r} must be a positive number ({why})")
    return value


def _check_positive(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ValueError(f"{info.field_name}={value} must be a positive int")
    return value


def _check_block_configs(value: Any, stages: int) -> list[list[BlockConfig]]:
    """Shape and types of ``block_configs``; the channel chain is checked by the config (it needs ``scale``)."""
    if not isinstance(value, (list, tuple)) or len(value) != stages:
        got = len(value) if isinstance(value, (list, tuple)) else repr(value)
        raise ValueError(f"block_configs must have {stages} stages (one list of blocks each), got {got}")
    checked: list[list[BlockConfig]] = []
    for stage, blocks in enumerate(value):
        if not isinstance(blocks, (list, tuple)) or not blocks:
            raise ValueError(f"block_configs[{stage}] must be a non-empty list of blocks, got {blocks!r}")
        stage_blocks: list[BlockConfig] = []
        for index, block in enumerate(blocks):
            where = f"block_configs[{stage}][{index}]"
            if not isinstance(block, (list, tuple)) or len(block) != 5:
                raise ValueError(
                    f"{where}={block!r} must be [kernel_size, in_channels, out_channels, stride, "
                    "use_squeeze_excitation]"
                )
            kernel, in_channels, out_channels, stride, use_se = block
            for name, number in (("kernel_size", kernel), ("in_channels", in_channels), ("out_channels", out_channels)):
                if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                    raise ValueError(f"{where}: {name}={number!r} must be a positive int")
            if kernel % 2 == 0:
                raise ValueError(
                    f"{where}: kernel_size={kernel} must be odd (3, 5, ...): an even kernel with the block's "
                    "kernel_size // 2 padding grows the map by one pixel and its branches no longer add up"
                )
            if not isinstance(use_se, bool):
                raise ValueError(f"{where}: use_squeeze_excitation={use_se!r} must be true or false")
            stage_blocks.append([kernel, in_channels, out_channels, _check_stride(stride, f"{where}: stride"), use_se])
        checked.append(stage_blocks)
    return checked


class _BlockTableConfig(BackboneConfig):
    """What every version's config shares: the input channels, the width multiplier and the table of blocks
    (``default_block_configs`` when none is given; ``block_table_stages`` entries, one a stage)."""

    num_channels: int = 3
    scale: float = 1.0
    block_configs: list[list[BlockConfig]] = Field(default_factory=list)

    default_block_configs: ClassVar[list[list[BlockConfig]]] = []
    block_table_stages: ClassVar[int] = 5

    def __init__(self, /, **data: Any) -> None:
        if data.get("block_configs") is None:
            data["block_configs"] = [[list(block) for block in stage] for stage in self.default_block_configs]
        super().__init__(**data)

    @field_validator("block_configs", mode="before")
    @classmethod
    def _blocks(cls, value: Any) -> list[list[BlockConfig]]:
        return _check_block_configs(value, cls.block_table_stages)


class _LCNetConfig(_BlockTableConfig):
    """Fields and checks PP-LCNet and PP-LCNetV3 share (their stems and channel rule are the same)."""

    stem_channels: int = 16
    stem_stride: Stride = 2
    reduction: int = 4
    divisor: int = 8
    hidden_act: ActivationName = "hardswish"

    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"depths"})

    @field_validator("stem_stride", mode="before")
    @classmethod
    def _stem_stride(cls, value: Any) -> Stride:
        return _check_stride(value, "stem_stride")

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, value: Any) -> Any:
        published = ", ".join(str(scale) for scale in SCALES)
        return _check_scale(value, f"the width multiplier; the published models use {published}")

    _positive = field_validator("num_channels", "stem_channels", "reduction", "divisor", mode="before")(_check_positive)

    @model_validator(mode="after")
    def _consistent(self) -> _LCNetConfig:
        writes = self.stem_width
        source = f"stem_channels={self.stem_channels}"
        for stage, blocks in enumerate(self.block_configs):
            for index, block in enumerate(blocks):
                reads = self.width(block[1])
                if reads != writes:
                    raise ValueError(
                        f"block_configs[{stage}][{index}]: in_channels={block[1]} is {reads} channels at scale="
                        f"{self.scale} and divisor={self.divisor}, but {source} gives {writes}; a block reads "
                        "what the block before it (or the stem) writes"
                    )
                width = self.width(block[1])
                if block[4] and width // self.reduction < 1:
                    raise ValueError(
                        f"block_configs[{stage}][{index}]: its squeeze-excitation squeezes {width} channels by "
                        f"reduction={self.reduction} to none; use a reduction of at most {width}"
                    )
                writes = self.width(block[2])
                source = f"block_configs[{stage}][{index}] (out_channels={block[2]})"
        return self

    def width(self, channels: int) -> int:
        """The real width of ``channels`` in ``block_configs``: ``make_divisible(channels * scale, divisor)``."""
        return make_divisible(channels * self.scale, self.divisor)

    @property
    def stem_width(self) -> int:
        """Output channels of the stem."""
        return self.width(self.stem_channels)

    @property
    def depths(self) -> list[int]:
        """Blocks per stage (transformers writes them to ``config.json``; derived here)."""
        return [len(blocks) for blocks in self.block_configs]

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(len(self.block_configs))


# The first three stages of PP-LCNet and of PP-LCNetV3 (per block: kernel, in, out, stride, squeeze-excitation);
# the two differ only in their last two stages.
_LCNET_FIRST_STAGES: list[list[BlockConfig]] = [
    [[3, 16, 32, 1, False]],
    [[3, 32, 64, 2, False], [3, 64, 64, 1, False]],
    [[3, 64, 128, 2, False], [3, 128, 128, 1, False]],
]


class PPLCNetConfig(_LCNetConfig):
    """Configuration of a PP-LCNet backbone (defaults: PP-LCNet x1.0, as transformers' PPLCNetConfig).

    The stages are ``["stem", "stage1", ..., "stage5"]``: a 3x3 convolution, then five stages of
    depthwise-separable blocks (depthwise ``k x k`` conv-BN-activation, optional squeeze-excitation,
    pointwise conv-BN-activation).

    Args:
        num_channels: Channels of the input images (transformers' model always reads 3).
        scale: Width multiplier: every width is ``make_divisible(width * scale, divisor)``.
        block_configs: Per stage, per block ``[kernel_size, in_channels, out_channels, stride,
            use_squeeze_excitation]`` (widths before ``scale``); ``None`` gives PP-LCNet's.
        stem_channels: Output channels of the stem before ``scale``.
        stem_stride: Stride of the stem convolution (an int or a ``[height, width]`` pair).
        reduction: Squeeze-excitation reduction factor.
        divisor: Widths are rounded to multiples of it.
        hidden_act: Activation after every convolution of the trunk.
        class_expand: Width of the classifier's 1x1 expansion (kept for transformers; unused by the backbone).
        hidden_dropout_prob: The classifier's dropout (kept for transformers; unused by the backbone).
    """

    model_type: ClassVar[str] = "pp_lcnet"
    default_block_configs: ClassVar[list[list[BlockConfig]]] = [
        *_LCNET_FIRST_STAGES,
        [[3, 128, 256, 2, False], *[[5, 256, 256, 1, False] for _ in range(5)]],
        [[5, 256, 512, 2, True], [5, 512, 512, 1, True]],
    ]

    class_expand: int = 1280
    hidden_dropout_prob: float = 0.2


class PPLCNetV3Config(_LCNetConfig):
    """Configuration of a PP-LCNetV3 backbone (defaults: transformers' PPLCNetV3Config, PP-LCNetV3 x1.0).

    The layout of :class:`PPLCNetConfig` (the stem has no activation here) with reparameterisable
    blocks: the depthwise and the pointwise convolution of every block are each a sum of
    ``conv_symmetric_num`` ``k x k`` conv-BN branches, a 1x1 conv-BN branch (for ``k > 1``) and a BN
    identity branch (where input and output have the same shape), followed by a learnable affine
    (``scale * x + bias``) and, unless the stride is 2, the activation and another learnable affine.
    :meth:`~backbones.Backbone.reparameterize` folds each into one convolution.

    Args:
        num_channels: Channels of the input images (transformers' model always reads 3).
        scale: Width multiplier: every width is ``make_divisible(width * scale, divisor)``.
        block_configs: Per stage, per block ``[kernel_size, in_channels, out_channels, stride,
            use_squeeze_excitation]``; ``None`` gives PP-LCNetV3's.
        stem_channels: Output channels of the stem before ``scale``.
        stem_stride: Stride of the stem convolution (an int or a ``[height, width]`` pair).
        reduction: Squeeze-excitation reduction factor.
        divisor: Widths are rounded to multiples of it (the PP-OCRv5 models use 16).
        hidden_act: Activation of the blocks.
        conv_symmetric_num: Number of ``k x k`` branches of each reparameterisable layer (at least 1).
    """

    model_type: ClassVar[str] = "pp_lcnet_v3"
    default_block_configs: ClassVar[list[list[BlockConfig]]] = [
        *_LCNET_FIRST_STAGES,
        [[3, 128, 256, 2, False], *[[5, 256, 256, 1, False] for _ in range(4)]],
        [[5, 256, 512, 2, True], [5, 512, 512, 1, True], [5, 512, 512, 1, False], [5, 512, 512, 1, False]],
    ]

    conv_symmetric_num: int = 4

    @field_validator("conv_symmetric_num")
    @classmethod
    def _branches(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"conv_symmetric_num={value} must be at least 1: a pointwise layer that changes the width has no "
                "other branch"
            )
        return value


class PPLCNetV4Config(_BlockTableConfig):
    """Configuration of a PP-LCNetV4 backbone (defaults: transformers' PPLCNetV4Config).

    The stages are ``["stem", "stage1", ..., "stage4"]``. The stem is HGNet's (``stem_type="large"``: a 3x3
    convolution, a max-pool beside two 2x2 convolutions, a 3x3 and a 1x1) or two stride-2 3x3 convolutions
    with a GELU between (``"small"``). A block is a depthwise ``k x k`` token mixer (a plain convolution
    with bias where the block keeps its shape, else conv-BN), optional squeeze-excitation, and a 1x1
    expand (x2) - GELU - 1x1 channel mixer with a residual where the block keeps its shape.

    Args:
        num_channels: Channels of the input images (must equal ``stem_channels[0]``).
        scale: Kept for transformers, where it only scales the widths it reports; it does not change the
            network (``block_configs`` holds the real widths).
        block_configs: Per stage, per block ``[kernel_size, in_channels, out_channels, stride,
            use_squeeze_excitation]``; ``None`` gives PP-LCNetV4's.
        stem_channels: ``[input, middle, output]`` channels of the stem.
        stem_strides: Strides of the large stem's five convolutions (``stem1, stem2a, stem2b, stem3,
            stem4``; ints or ``[height, width]`` pairs; the two 2x2 convolutions must keep stride 1).
        stem_type: ``"large"`` or ``"small"``.
        reduction: Squeeze-excitation reduction factor.
        hidden_act: Activation of the large stem's convolutions.
        use_learnable_affine_block: Follow each activated stem convolution by a learnable scale and bias.
    """

    model_type: ClassVar[str] = "pp_lcnet_v4"
    default_block_configs: ClassVar[list[list[BlockConfig]]] = [
        [[3, 96, 96, 1, True]],
        [[3, 96, 96, 1, False], [3, 96, 96, 1, False]],
        [
            [3, 96, 192, [2, 1], False],
            *[[3, 192, 192, 1, index % 2 == 0] for index in range(6)],
        ],
        [[3, 192, 384, [2, 1], False], [3, 384, 384, 1, True], [3, 384, 384, 1, False]],
    ]
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"depths", "stage_out_channels"})
    block_table_stages: ClassVar[int] = 4

    stem_channels: list[int] = [3, 48, 96]
    stem_strides: list[Stride] = [2, 1, 1, 2, 1]
    stem_type: Literal["large", "small"] = "large"
    reduction: int = 4
    hidden_act: ActivationName = "relu"
    use_learnable_affine_block: bool = False

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, value: Any) -> Any:
        return _check_scale(value, "transformers multiplies the widths it reports by it")

    _positive = field_validator("reduction", "num_channels", mode="before")(_check_positive)

    @field_validator("stem_strides", mode="before")
    @classmethod
    def _stem_strides(cls, value: Any) -> list[Stride]:
        if not isinstance(value, (list, tuple)) or len(value) != 5:
            raise ValueError(f"stem_strides must have 5 entries (stem1, stem2a, stem2b, stem3, stem4), got {value!r}")
        return [_check_stride(stride, f"stem_strides[{index}]") for index, stride in enumerate(value)]

    @model_validator(mode="after")
    def _consistent(self) -> PPLCNetV4Config:
        check_stem_channels(self.stem_channels, self.num_channels)
        if self.stem_type == "large":
            if self.stem_channels[1] < 2:
                raise ValueError(
                    f"stem_channels[1]={self.stem_channels[1]} must be at least 2 with stem_type='large' (its split "
                    "branch has half as many)"
                )
            if stride_pair(self.stem_strides[1]) != (1, 1) or stride_pair(self.stem_strides[2]) != (1, 1):
                raise ValueError(
                    f"stem_strides[1] and stem_strides[2] must be 1, got {self.stem_strides}: the 2x2 convolutions "
                    "of the stem's split branch are concatenated with a stride-1 max-pool of the same input"
                )
        writes, source = self.stem_channels[2], f"stem_channels[2]={self.stem_channels[2]}"
        for stage, blocks in enumerate(self.block_configs):
            for index, block in enumerate(blocks):
                if block[1] != writes:
                    raise ValueError(
                        f"block_configs[{stage}][{index}]: in_channels={block[1]} must equal {source}: a block reads "
                        "what the block before it (or the stem) writes"
                    )
                if block[4] and block[1] // self.reduction < 1:
                    raise ValueError(
                        f"block_configs[{stage}][{index}]: its squeeze-excitation squeezes {block[1]} channels by "
                        f"reduction={self.reduction} to none; use a reduction of at most {block[1]}"
                    )
                writes, source = block[2], f"block_configs[{stage}][{index}] (out_channels={block[2]})"
        return self

    @property
    def depths(self) -> list[int]:
        """Blocks per stage (transformers writes them to ``config.json``; derived here)."""
        return [len(blocks) for blocks in self.block_configs]

    @property
    def stage_out_channels(self) -> list[int]:
        """Output channels of each stage (transformers writes them to ``config.json``; derived here)."""
        return [blocks[-1][2] for blocks in self.block_configs]

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(len(self.block_configs))
