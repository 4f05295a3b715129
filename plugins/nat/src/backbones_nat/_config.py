"""Configuration of NAT. Field names and defaults follow transformers' NatConfig (nat-mini)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from backbones.validation import HierarchicalTransformerConfig, check_positive_mlp_ratio


class NatConfig(HierarchicalTransformerConfig):
    """Configuration of a Neighborhood Attention Transformer backbone; the defaults describe nat-mini.

    Stage ``i`` has ``depths[i]`` layers at ``embed_dim * 2**i`` channels; the fields common to hierarchical
    transformers, their rules and the derived ``hidden_size`` and ``num_layers`` are those of
    :class:`backbones.validation.HierarchicalTransformerConfig`.

    Args:
        patch_size: Stride of the stem; it must be 4 (two stride-2 convolutions, as in the reference).
        embed_dim: Channels of the stem output; each stage after the first doubles them.
        depths: Number of transformer layers in each stage.
        num_heads: Attention heads in each stage.
        kernel_size: Side of the (square, odd) attention neighbourhood.
        mlp_ratio: Hidden width of each layer's MLP, relative to its input width.
        layer_scale_init_value: Initial value of the per-channel scales of both residual branches;
            ``<= 0`` disables them (no ``layer_scale_parameters`` in the checkpoint).
        **fields: ``num_channels``, ``qkv_bias``, ``hidden_dropout_prob`` (on the stem output and the MLP outputs),
            ``attention_probs_dropout_prob`` (transformers also uses it on the attention output projection),
            ``drop_path_rate``, ``hidden_act``, ``initializer_range`` and ``layer_norm_eps``, as
            :class:`~backbones.validation.HierarchicalTransformerConfig` documents them.
    """

    model_type: ClassVar[str] = "nat"

    patch_size: int = 4
    embed_dim: int = Field(default=64, ge=2)
    depths: list[int] = [3, 4, 6, 5]
    num_heads: list[int] = [2, 4, 8, 16]
    kernel_size: int = Field(default=7, ge=1)
    mlp_ratio: float = Field(default=3.0, gt=0)
    layer_scale_init_value: float = 0.0

    @model_validator(mode="after")
    def _check_architecture(self) -> NatConfig:
        if self.patch_size != 4:
            raise ValueError(
                f"patch_size must be 4: the stem is two stride-2 convolutions, as in the reference; got {self.patch_size}"
            )
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd, so that the neighbourhood is centred on its query; got {self.kernel_size} "
                f"(use {self.kernel_size - 1} or {self.kernel_size + 1})"
            )
        check_positive_mlp_ratio(self.mlp_ratio, self.embed_dim, mlp="the first stage's MLP")
        return self

    @property
    def layer_dilations(self) -> list[list[int]]:
        """Dilation of every layer, per stage (all 1 for NAT; DiNAT's config sets them)."""
        return [[1] * depth for depth in self.depths]
