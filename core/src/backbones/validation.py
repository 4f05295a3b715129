"""Config rules several architectures share, in one place (pydantic validators of plugins call them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, model_validator

from ._config import BackboneConfig
from .activations import check_activation

__all__ = [
    "OUTPUT_STRIDES",
    "ActivationName",
    "DilatedStage",
    "HierarchicalTransformerConfig",
    "OutputStride",
    "PositiveInts",
    "PositivePerStage",
    "RecomputedDerivedKeys",
    "StagesPerDepth",
    "check_choice",
    "check_entries_at_least_one",
    "check_heads_divide",
    "check_hidden_sizes_per_stage",
    "check_image_holds_patches",
    "check_layer_indices",
    "check_odd_kernels",
    "check_positive_mlp_ratio",
    "check_rotary_heads",
    "check_stage_heads",
    "check_stem_channels",
    "dilate_stages",
    "image_pair",
    "numbered_stage_names",
    "odd_kernels",
    "square_patch",
    "square_patch_size",
]


def _known_activation(value: str, info: ValidationInfo) -> str:
    return check_activation(value, info.field_name or "hidden_act")


def _positive_per_stage(value: list[int], info: ValidationInfo) -> list[int]:
    if not value or any(item < 1 for item in value):
        raise ValueError(f"{info.field_name} must list one positive integer per stage, got {value}")
    return value


def _positive_ints(value: list[int], info: ValidationInfo) -> list[int]:
    if not value or any(item < 1 for item in value):
        raise ValueError(f"{info.field_name} must be a non-empty list of positive integers, got {value}")
    return value


ActivationName = Annotated[str, AfterValidator(_known_activation)]
"""Type of a config field naming an activation (``hidden_act``): one of :data:`backbones.activations.ACTIVATIONS`,
else a ``ValueError`` naming the field and listing the supported names."""

PositivePerStage = Annotated[list[int], AfterValidator(_positive_per_stage)]
"""Type of a config field with one positive integer per stage (``depths``, ``hidden_sizes``, ...): a
``ValueError`` names the field for an empty list or an entry below 1."""

PositiveInts = Annotated[list[int], AfterValidator(_positive_ints)]
"""Type of a config field holding a non-empty list of positive integers that is not one entry per stage
(strides of a stem's convolutions, ...)."""


def square_patch(example: int) -> BeforeValidator:
    """Validator of a ``patch_size`` field: ``p`` or ``[p, p]`` becomes ``p`` (see :func:`square_patch_size`).

    Use it as ``patch_size: Annotated[int, square_patch(16)] = Field(default=16, ge=1)``.

    Args:
        example: The architecture's usual patch size, shown in the error message.
    """
    return BeforeValidator(partial(square_patch_size, example=example))


def numbered_stage_names(count: int) -> list[str]:
    """The stage names ``["stem", "stage1", ..., "stage<count>"]`` of a backbone with ``count`` stages after its stem."""
    return ["stem"] + [f"stage{index}" for index in range(1, count + 1)]


class StagesPerDepth:
    """Mixin of a :class:`~backbones.BackboneConfig` with one stage per entry of its ``depths`` field (and a
    stem): its ``stage_names`` are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``
    (:func:`numbered_stage_names`). List it before ``BackboneConfig`` in the bases.

    Example:
        >>> class MyConfig(StagesPerDepth, BackboneConfig):  # doctest: +SKIP
        ...     depths: list[int] = [2, 2, 6, 2]
        >>> MyConfig().stage_names  # doctest: +SKIP
        ['stem', 'stage1', 'stage2', 'stage3', 'stage4']
    """

    if TYPE_CHECKING:
        depths: list[int]

    @property
    def stage_names(self) -> list[str]:
        """``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``."""
        return numbered_stage_names(len(self.depths))


def image_pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(height, width)`` of an ``image_size`` given as one int or as a pair."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return height, width


def check_choice(name: str, value: str, choices: Sequence[str], hint: str) -> str:
    """Require a config field's ``value`` to be one of ``choices`` (for a pydantic ``field_validator``).

    Args:
        name: The field's name, as the message names it.
        value: The given value.
        choices: The values the architecture supports.
        hint: When to choose which, put in parentheses after the list (e.g. ``"'basic' for ResNet-18/34"``).

    Returns:
        ``value``.

    Raises:
        ValueError: Naming the value, the supported ones and ``hint``.
    """
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not supported; set {name} to one of {list(choices)} ({hint})")
    return value


def check_hidden_sizes_per_stage(hidden_sizes: list[int], depths: list[int]) -> None:
    """Require one channel count (``hidden_sizes``) per stage (``depths``).

    Raises:
        ValueError: Naming both lengths and the fix.
    """
    if len(hidden_sizes) != len(depths):
        raise ValueError(
            f"hidden_sizes has {len(hidden_sizes)} entries but depths has {len(depths)}; "
            "give one channel count and one depth per stage (len(hidden_sizes) == len(depths))"
        )


def check_stem_channels(stem_channels: list[int], num_channels: int) -> None:
    """Require a three-width stem's ``stem_channels`` to be ``[input, middle, output]``, three positive ints whose
    first is the image's channels (``num_channels``), as HGNetV2 and PP-LCNetV4 configs list them.

    Raises:
        ValueError: Naming the wrong list, or both channel counts.
    """
    if len(stem_channels) != 3 or any(item < 1 for item in stem_channels):
        raise ValueError(f"stem_channels must be [input, middle, output] (three positive ints), got {stem_channels}")
    if stem_channels[0] != num_channels:
        raise ValueError(
            f"stem_channels[0]={stem_channels[0]} must equal num_channels={num_channels} "
            "(the stem's first convolution reads the image)"
        )


def check_odd_kernels(name: str, kernels: Sequence[int], why: str) -> None:
    """Require every kernel size in the config field ``name`` to be odd and at least 1.

    Args:
        name: The field (``stage_kernel_size``, ``focal_windows``, ...), named in the message.
        kernels: Its kernel sizes.
        why: What an even kernel would break in this architecture, ending the message.

    Raises:
        ValueError: Naming the first offending entry, the whole list and ``why``.
    """
    for index, kernel in enumerate(kernels):
        if kernel < 1 or kernel % 2 == 0:
            problem = f"must be odd: {why}" if kernel >= 1 else "is below 1"
            raise ValueError(
                f"{name} must hold odd kernel sizes >= 1, got {list(kernels)}; {name}[{index}]={kernel} {problem}"
            )


def odd_kernels(why: str) -> AfterValidator:
    """A pydantic validator for a field of kernel sizes: :func:`check_odd_kernels` with the field's name.

    Args:
        why: What an even kernel would break in this architecture, ending the message.

    Example:
        >>> stage_kernel_size: Annotated[list[int], odd_kernels("the blocks' maps would shrink")] = [3, 5]  # doctest: +SKIP
    """

    def check(value: list[int], info: ValidationInfo) -> list[int]:
        check_odd_kernels(info.field_name or "kernel_size", value, why)
        return value

    return AfterValidator(check)


def check_layer_indices(name: str, indices: list[int], num_layers: int) -> None:
    """Require every entry of the config field ``name`` to be a 0-based index of one of ``num_layers`` layers.

    Raises:
        ValueError: Listing the indices outside the model and the valid range.
    """
    outside = [index for index in indices if not 0 <= index < num_layers]
    if outside:
        raise ValueError(
            f"{name} {outside} are not layers of this model; use 0-based layer indices "
            f"from 0 to num_hidden_layers - 1 = {num_layers - 1}"
        )


def check_image_holds_patches(
    name: str, size: int | tuple[int, int], patch_size: int, *, square_grid: bool = False
) -> None:
    """Require the image size in the config field ``name`` to hold one patch at least in each direction.

    Args:
        name: The field (``image_size``, ``pretrain_image_size``, ...), named in the message.
        size: Its value, one int or ``(height, width)``.
        patch_size: Side of the square patches.
        square_grid: Also require a square grid of patches (it sizes a square position table).

    Raises:
        ValueError: Naming the field, its value and the fix.
    """
    height, width = image_pair(size)
    if height < patch_size or width < patch_size:
        raise ValueError(f"{name} {size} is smaller than patch_size {patch_size}; set {name} >= patch_size")
    if square_grid and height // patch_size != width // patch_size:
        raise ValueError(
            f"{name} {size} gives a {height // patch_size}x{width // patch_size} grid of "
            f"patches, but the absolute position table is a square grid; use a square {name}"
        )


def check_positive_mlp_ratio(mlp_ratio: float, hidden_size: int, *, mlp: str = "the MLP") -> None:
    """Require an MLP ratio that leaves a transformer layer's MLP (``int(hidden_size * mlp_ratio)`` wide) a hidden unit.

    Args:
        mlp_ratio: Hidden width of the MLP relative to its input width.
        hidden_size: Input width of the narrowest MLP (a hierarchical model's first stage).
        mlp: How the message names that MLP (e.g. ``"the first stage's MLP"``).

    Raises:
        ValueError: For a ratio that is not positive, or one too small for ``hidden_size``.
    """
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be positive (the MLP is mlp_ratio * hidden_size wide), got {mlp_ratio}")
    if int(hidden_size * mlp_ratio) < 1:
        raise ValueError(f"mlp_ratio={mlp_ratio} leaves {mlp} with no hidden units; raise mlp_ratio")


def check_rotary_heads(hidden_size: int, num_attention_heads: int) -> None:
    """Require heads that 2-D rotary position embeddings can rotate: ``num_attention_heads`` divides
    ``hidden_size`` (see :func:`check_heads_divide`) into head widths that are multiples of 4 (each head holds a
    sine-cosine pair per axis).

    Raises:
        ValueError: Naming the head width and the fix.
    """
    check_heads_divide(hidden_size, num_attention_heads)
    head_width = hidden_size // num_attention_heads
    if head_width % 4:
        raise ValueError(
            f"hidden_size / num_attention_heads = {hidden_size} / {num_attention_heads} = {head_width} "
            "must be a multiple of 4: the rotary embedding gives each head a sine-cosine pair per axis; "
            "choose a head count that leaves heads a multiple of 4 wide"
        )


def square_patch_size(value: Any, example: int) -> Any:
    """Normalise a ``patch_size`` given as ``p`` or ``[p, p]`` (transformers accepts both) to ``p``.

    A stage's stride is one number, so only square patches are meaningful. Anything that is not a list or
    tuple is returned unchanged, for the field's own type check.

    Args:
        value: The raw ``patch_size``.
        example: The architecture's usual patch size, shown in the error message.

    Raises:
        ValueError: For a pair that is not square, or a list that is not a pair.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(
                f"patch_size must be one int or a square pair such as [{example}, {example}], got {list(value)}"
            )
        return value[0]
    return value


def check_heads_divide(hidden_size: int, num_attention_heads: int) -> None:
    """Require ``num_attention_heads`` to divide ``hidden_size`` (every head gets an equal slice).

    Raises:
        ValueError: Naming both values and the fix.
    """
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} does not divide hidden_size={hidden_size}; "
            "choose a head count that divides hidden_size"
        )


def check_stage_heads(embed_dim: int, depths: list[int], num_heads: list[int]) -> None:
    """Require one head count per stage of a hierarchical transformer whose stage ``i`` is
    ``embed_dim * 2**i`` wide, each a positive divisor of its stage's width.

    Raises:
        ValueError: Naming the stage, its width and the fix.
    """
    if len(num_heads) != len(depths):
        raise ValueError(
            f"num_heads has {len(num_heads)} entries but depths has {len(depths)}; "
            "give num_heads one head count per stage"
        )
    for index, heads in enumerate(num_heads):
        width = embed_dim * 2**index
        if heads < 1 or width % heads:
            raise ValueError(
                f"num_heads[{index}]={heads} must be a positive divisor of stage {index + 1}'s width "
                f"embed_dim * 2**{index} = {width}; change num_heads or embed_dim"
            )


OUTPUT_STRIDES = (8, 16, 32)
"""Values of an ``output_stride`` config field: 32 keeps every stride; 16 and 8 dilate the last stages."""


def _valid_output_stride(value: int, info: ValidationInfo) -> int:
    if value not in OUTPUT_STRIDES:
        raise ValueError(
            f"{info.field_name or 'output_stride'} must be one of {list(OUTPUT_STRIDES)} (32: no dilation; 16 "
            f"or 8 replace the strides of the last stages by dilation), got {value}"
        )
    return value


OutputStride = Annotated[int, AfterValidator(_valid_output_stride)]
"""Type of an ``output_stride`` config field: one of :data:`OUTPUT_STRIDES`, else a ``ValueError`` listing them.
The stages are then planned with :func:`dilate_stages`."""


@dataclass(frozen=True)
class DilatedStage:
    """Stride and dilation of one stage under an ``output_stride`` (see :func:`dilate_stages`).

    Attributes:
        stride: The stage's stride (1 where dilation replaced it).
        dilation: Dilation of the stage's convolutions after its first strided one.
        first_dilation: Dilation of the convolution that carries (or carried) the stage's stride: the
            previous stage's dilation, so the first window still sees the previous resolution's grid.
        reduction: Stride of the stage's output relative to the input.
    """

    stride: int
    dilation: int
    first_dilation: int
    reduction: int


def dilate_stages(strides: Sequence[int], output_stride: int, *, stem_stride: int) -> list[DilatedStage]:
    """Plan stages DeepLab-style: once the reduction reaches ``output_stride``, strides become dilations.

    The rule of timm's ResNet and ConvNeXt (``output_stride=``): a stage whose input is already at
    ``output_stride`` keeps the resolution (stride 1) and multiplies the dilation by the stride it would
    have had; its first strided convolution keeps the previous stage's dilation. Weights are unchanged,
    so a checkpoint loads at any output stride. 32, the default, dilates nothing, even in a network that
    reduces further (a ResNet that downsamples in its first stage too reaches 64, as in transformers).

    Args:
        strides: Each stage's stride without dilation (e.g. ``[1, 2, 2, 2]`` for ResNet).
        output_stride: The largest reduction wanted (one of :data:`OUTPUT_STRIDES`).
        stem_stride: Reduction of the stem, before the first stage.

    Returns:
        One :class:`DilatedStage` per stage.

    Raises:
        ValueError: ``output_stride`` is below ``stem_stride`` (dilation cannot undo the stem's stride).
    """
    if output_stride < stem_stride:
        raise ValueError(
            f"output_stride={output_stride} is below the stem's stride {stem_stride}, which dilation cannot "
            f"undo; use an output_stride of at least {stem_stride} (one of {list(OUTPUT_STRIDES)})"
        )
    plans = []
    reduction, dilation = stem_stride, 1
    for stride in strides:
        first_dilation = dilation
        if output_stride < max(OUTPUT_STRIDES) and reduction >= output_stride and stride > 1:
            dilation, stride = dilation * stride, 1
        reduction *= stride
        plans.append(DilatedStage(stride, dilation, first_dilation, reduction))
    return plans


class RecomputedDerivedKeys:
    """Mixin of a :class:`~backbones.BackboneConfig` whose :attr:`~backbones.BackboneConfig.derived_config_keys`
    are properties computed from its fields (Swin's ``hidden_size``, FocalNet's ``hidden_sizes``, ...): a value
    given for one of them (``config.json`` holds them, as the reference implementation writes them) is dropped,
    never read back, so the config cannot disagree with its own fields. List it before ``BackboneConfig`` in
    the bases.
    """

    if TYPE_CHECKING:
        derived_config_keys: ClassVar[tuple[str, ...]]

    def __init__(self, /, **data: Any) -> None:
        for key in self.derived_config_keys:
            data.pop(key, None)
        super().__init__(**data)


class HierarchicalTransformerConfig(RecomputedDerivedKeys, StagesPerDepth, BackboneConfig):
    """Fields and rules shared by the configs of hierarchical vision transformers whose stage ``i`` (from 0) runs
    ``depths[i]`` transformer layers of ``num_heads[i]`` heads at ``embed_dim * 2**i`` channels, each stage after
    the first at half the resolution of the one before (transformers' Swin, Swin V2, MaskFormer-Swin, NAT and
    DiNAT configs, with their field names).

    A base class: an architecture's config subclasses it and declares ``embed_dim``, ``depths``, ``num_heads`` and
    ``mlp_ratio`` with its own defaults (they have none here). Stages are ``["stem", "stage1", ..., "stageN"]``
    (:class:`StagesPerDepth`); ``hidden_size`` and ``num_layers`` are derived and written to ``config.json`` as
    transformers writes them (:class:`RecomputedDerivedKeys`).

    Args:
        num_channels: Input channels.
        embed_dim: Channels of the stem output and of the first stage; each stage after the first doubles them.
        depths: Number of transformer layers in each stage (at least one stage, each with one layer or more).
        num_heads: Attention heads in each stage, each a divisor of its stage's width (:func:`check_stage_heads`).
        mlp_ratio: Hidden width of each layer's MLP, relative to its input width.
        qkv_bias: Whether the query, key and value projections have a bias.
        hidden_dropout_prob: Dropout on embeddings and MLP outputs (training only; where else, the architecture's
            config says).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        drop_path_rate: Stochastic-depth rate of the deepest layer; it grows linearly from 0.
        hidden_act: Activation of the MLPs (a name of :data:`backbones.activations.ACTIVATIONS`).
        initializer_range: Standard deviation of the normal initialisation of linear and conv weights.
        layer_norm_eps: Epsilon of the layer norms inside the transformer layers.
    """

    num_channels: int = Field(default=3, ge=1)
    embed_dim: int = Field(ge=1)
    depths: list[int]
    num_heads: list[int]
    mlp_ratio: float = Field(gt=0)
    qkv_bias: bool = True
    hidden_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    drop_path_rate: float = Field(default=0.1, ge=0, lt=1)
    hidden_act: ActivationName = "gelu"
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5

    derived_config_keys: ClassVar[tuple[str, ...]] = ("hidden_size", "num_layers")

    @model_validator(mode="after")
    def _check_stage_layout(self) -> HierarchicalTransformerConfig:
        if not self.depths or any(depth < 1 for depth in self.depths):
            raise ValueError(f"depths must list at least one stage, each with one layer or more; got {self.depths}")
        check_stage_heads(self.embed_dim, self.depths, self.num_heads)
        return self

    @property
    def num_layers(self) -> int:
        """Number of stages after the stem (transformers' derived ``num_layers``)."""
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage (transformers' derived ``hidden_size``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


def check_entries_at_least_one(name: str, values: Sequence[float]) -> None:
    """Refuse a list with an entry below 1 (a list of widths, strides or ratios, none of which may be below 1).

    Args:
        name: How the error names the list, indices and all (``"hidden_sizes"``, ``"conv_layer_strides[2]"``).
        values: The entries.

    Raises:
        ValueError: Naming the first entry below 1 by its index and value.
    """
    for index, value in enumerate(values):
        if value < 1:
            raise ValueError(f"{name}[{index}]={value} must be 1 or more")
