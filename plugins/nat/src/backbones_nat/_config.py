"""Configuration of NAT. Field names and defaults follow transformers' NatConfig (nat-mini)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig
from backbones.validation import ActivationName, check_stage_heads, numbered_stage_names

# Activations the MLP supports, by the names transformers' configs use.
# Values transformers derives from the fields and writes to config.json; recomputed, never read back.
_DERIVED_FIELDS = ("hidden_size", "num_layers")


class NatConfig(BackboneConfig):
    """Configuration of a Neighborhood Attention Transformer backbone; the defaults describe nat-mini.

    Args:
        patch_size: Stride of the stem; it must be 4 (two stride-2 convolutions, as in the reference).
        num_channels: Input channels.
        embed_dim: Channels of the stem output; each stage after the first doubles them.
        depths: Number of transformer layers in each stage.
        num_heads: Attention heads in each stage.
        kernel_size: Side of the (square, odd) attention neighbourhood.
        mlp_ratio: Hidden width of each layer's MLP, relative to its input width.
        qkv_bias: Whether the query, key and value projections have a bias.
        hidden_dropout_prob: Dropout on the stem output and the MLP outputs (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities and on the attention output
            projection (training only; transformers uses this rate for both).
        drop_path_rate: Stochastic-depth rate of the deepest layer; it grows linearly from 0.
        hidden_act: Activation of the MLP (a name of :data:`backbones.activations.ACTIVATIONS`).
        initializer_range: Standard deviation of the normal initialisation of linear and conv weights.
        layer_norm_eps: Epsilon of the layer norms inside the transformer layers.
        layer_scale_init_value: Initial value of the per-channel scales of both residual branches;
            ``<= 0`` disables them (no ``layer_scale_parameters`` in the checkpoint).
    """

    model_type: ClassVar[str] = "nat"

    patch_size: int = 4
    num_channels: int = Field(default=3, ge=1)
    embed_dim: int = Field(default=64, ge=2)
    depths: list[int] = [3, 4, 6, 5]
    num_heads: list[int] = [2, 4, 8, 16]
    kernel_size: int = Field(default=7, ge=1)
    mlp_ratio: float = Field(default=3.0, gt=0)
    qkv_bias: bool = True
    hidden_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    drop_path_rate: float = Field(default=0.1, ge=0, lt=1)
    hidden_act: ActivationName = "gelu"
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    layer_scale_init_value: float = 0.0

    # Written to config.json as transformers writes them, so tools that read the file directly find them.
    derived_config_keys: ClassVar[tuple[str, ...]] = _DERIVED_FIELDS

    def __init__(self, /, **data: Any) -> None:
        for name in _DERIVED_FIELDS:
            data.pop(name, None)
        super().__init__(**data)

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
        if not self.depths or any(depth < 1 for depth in self.depths):
            raise ValueError(f"depths must list at least one stage, each with one layer or more; got {self.depths}")
        check_stage_heads(self.embed_dim, self.depths, self.num_heads)
        if int(self.mlp_ratio * self.embed_dim) < 1:
            raise ValueError(
                f"mlp_ratio={self.mlp_ratio} leaves the first stage's MLP with no hidden units "
                f"(int(mlp_ratio * embed_dim) = 0); raise mlp_ratio"
            )
        return self

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(len(self.depths))

    @property
    def layer_dilations(self) -> list[list[int]]:
        """Dilation of every layer, per stage (all 1 for NAT; DiNAT's config sets them)."""
        return [[1] * depth for depth in self.depths]

    @property
    def num_layers(self) -> int:
        """Number of stages (transformers' derived ``num_layers``)."""
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage (transformers' derived ``hidden_size``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)
