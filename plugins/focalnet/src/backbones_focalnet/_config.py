"""Configuration of FocalNet. Field names and defaults follow transformers' FocalNetConfig (focalnet-tiny)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from backbones import BackboneConfig
from backbones.activations import ACTIVATIONS
from backbones.validation import (
    ActivationName,
    PositivePerStage,
    RecomputedDerivedKeys,
    StagesPerDepth,
    check_positive_mlp_ratio,
    odd_kernels,
    square_patch,
)

__all__ = ["ACTIVATIONS", "FocalNetConfig"]

"""Supported values of ``hidden_act`` (the activation inside each block's MLP)."""

# The convolutional stem is a 7x7 convolution of stride 4 whatever patch_size says.
_CONV_STEM_STRIDE = 4


class FocalNetConfig(RecomputedDerivedKeys, StagesPerDepth, BackboneConfig):
    """Configuration of a FocalNet backbone; the defaults describe focalnet-tiny (srf).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = len(depths)``. Stage ``i < N`` is the
    output of block group ``i`` *after* its downsampling (``embed_dim * 2**i`` channels, stride
    ``patch_size * 2**i``); the last stage is the last group's output, at the stride of the one before.

    Args:
        image_size: Pre-training image size (one int or ``[height, width]``); kept for compatibility,
            it changes nothing in the backbone (any input size works).
        patch_size: Stride of the stem's patch projection; inputs are zero-padded (bottom, right) to a
            multiple of it.
        num_channels: Input channels.
        embed_dim: Channels of the stem; every downsampling doubles them.
        use_conv_embed: Overlapping convolutions instead of patch projections: 7x7 stride 4 in the stem
            (needs ``patch_size == 4``), 3x3 stride 2 in the downsamplings (FocalNet-L/XL/H).
        depths: Number of focal modulation blocks in each stage.
        focal_levels: Per stage, how many depthwise convolutions the context stack has (0 keeps only
            the global average context). Entries beyond ``len(depths)`` are ignored.
        focal_windows: Per stage, kernel size of the first depthwise convolution (odd); level ``k``
            uses ``focal_window + 2 * k``. Entries beyond ``len(depths)`` are ignored.
        hidden_act: Activation of the MLP (one of :data:`ACTIVATIONS`); the modulation always uses GELU.
        mlp_ratio: Hidden width of each block's MLP, relative to its input width.
        hidden_dropout_prob: Dropout after the stem, the modulation and the MLP layers (training only).
        drop_path_rate: Stochastic-depth rate of the deepest block; it grows linearly from 0.
        use_layerscale: Scale both residual branches of every block by learned per-channel factors.
        layerscale_value: Initial value of those factors.
        use_post_layernorm: Normalise each branch's output (post-norm) instead of its input (pre-norm).
        use_post_layernorm_in_modulation: Add a LayerNorm after the modulation, before its output
            projection.
        normalize_modulator: Divide the aggregated context by ``focal_level + 1``.
        initializer_range: Standard deviation of the normal initialisation of linear and conv weights.
        layer_norm_eps: Epsilon of every LayerNorm.
        encoder_stride: Upsampling factor of transformers' masked-image-modeling decoder (kept for
            compatibility; unused by the backbone).

    ``hidden_sizes`` is derived, not a field: transformers reads it only to report channels, and the
    configs its conversion script wrote for FocalNet-B/L/XL/H hold focalnet-tiny's values. The value in
    a config file is ignored and the real channels (from ``embed_dim``) are written back.
    """

    model_type: ClassVar[str] = "focalnet"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"hidden_sizes"})
    """Keys of transformers' config.json without effect here: transformers' widths derived from embed_dim."""

    image_size: int | list[int] = 224
    patch_size: Annotated[int, square_patch(4)] = Field(default=4, ge=1)
    num_channels: int = Field(default=3, ge=1)
    embed_dim: int = Field(default=96, ge=1)
    use_conv_embed: bool = False
    depths: PositivePerStage = [2, 2, 6, 2]
    focal_levels: list[int] = [2, 2, 2, 2]
    focal_windows: Annotated[
        list[int],
        odd_kernels(
            "an even kernel makes each context map one pixel larger than the input, so the levels cannot be "
            "summed (transformers fails too)"
        ),
    ] = [3, 3, 3, 3]
    hidden_act: ActivationName = "gelu"
    mlp_ratio: float = Field(default=4.0, gt=0)
    hidden_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    drop_path_rate: float = Field(default=0.1, ge=0, lt=1)
    use_layerscale: bool = False
    layerscale_value: float = 1e-4
    use_post_layernorm: bool = False
    use_post_layernorm_in_modulation: bool = False
    normalize_modulator: bool = False
    initializer_range: float = Field(default=0.02, ge=0)
    layer_norm_eps: float = Field(default=1e-5, gt=0)
    encoder_stride: int = 32

    # Written so that transformers' FocalNetBackbone, which reports channels from it, reports the real ones.
    derived_config_keys: ClassVar[tuple[str, ...]] = ("hidden_sizes",)

    @field_validator("focal_levels")
    @classmethod
    def _non_negative_levels(cls, value: list[int]) -> list[int]:
        if any(level < 0 for level in value):
            raise ValueError(
                f"focal_levels must be >= 0 (the number of depthwise convolutions per block; 0 keeps only "
                f"the global context), got {value}"
            )
        return value

    @model_validator(mode="after")
    def _check_stages(self) -> FocalNetConfig:
        stages = len(self.depths)
        for name in ("focal_levels", "focal_windows"):
            values = getattr(self, name)
            if len(values) < stages:
                raise ValueError(
                    f"{name} has {len(values)} entries but depths has {stages} stages; give {name} one value per stage"
                )
        if self.use_conv_embed and self.patch_size != _CONV_STEM_STRIDE:
            raise ValueError(
                f"use_conv_embed=True embeds with a 7x7 stride-{_CONV_STEM_STRIDE} convolution, so patch_size must be "
                f"{_CONV_STEM_STRIDE} (got {self.patch_size}); set patch_size={_CONV_STEM_STRIDE} or use_conv_embed=False"
            )
        check_positive_mlp_ratio(self.mlp_ratio, self.embed_dim, mlp="the MLP of the first stage")
        return self

    @property
    def stage_widths(self) -> list[int]:
        """Channels of the blocks of each stage (``embed_dim * 2**i``)."""
        return [self.embed_dim * 2**index for index in range(len(self.depths))]

    @property
    def hidden_sizes(self) -> list[int]:
        """Channels of ``stage1..stageN`` (transformers' ``hidden_sizes``), derived from ``embed_dim``."""
        widths = self.stage_widths
        return widths[1:] + widths[-1:]
