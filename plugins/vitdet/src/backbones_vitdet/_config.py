"""Configuration of ViTDet. Field names and defaults follow transformers' VitDetConfig."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig
from backbones.activations import ACTIVATIONS
from backbones.validation import (
    ActivationName,
    check_heads_divide,
    check_image_holds_patches,
    check_layer_indices,
    check_positive_mlp_ratio,
    image_pair,
    numbered_stage_names,
    square_patch,
)

__all__ = ["ACTIVATIONS", "VitDetConfig"]

"""Supported values of ``hidden_act``."""


class VitDetConfig(BackboneConfig):
    """Configuration of a ViTDet backbone; the defaults describe ViT-B/16 at 224 pixels.

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings (plus absolute positions), ``stageK`` the output of transformer layer ``K``. Every
    stage has ``hidden_size`` channels and stride ``patch_size``.

    Args:
        hidden_size: Width of the token embeddings (the channels of every feature map).
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        mlp_ratio: Hidden width of each MLP relative to ``hidden_size``.
        hidden_act: Activation of the MLPs and residual conv blocks (one of :data:`ACTIVATIONS`).
        dropout_prob: Dropout inside the MLPs (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation.
        layer_norm_eps: Epsilon of the transformer layers' layer norms.
        image_size: Fine-tuning image size (one int or ``(height, width)``); sizes the relative position
            tables of the global-attention layers, which are resampled for other inputs.
        pretrain_image_size: Pre-training image size; sizes the (square) absolute position table, which
            is resampled to the patch grid of every input.
        patch_size: Side of the square patches (the stride of every stage).
        num_channels: Input channels.
        qkv_bias: Whether the fused query/key/value projection has a bias.
        drop_path_rate: Stochastic-depth rate of the deepest layer; it grows linearly from 0 (training only).
        window_block_indices: Layers (0-based) that attend within ``window_size`` windows; the others
            attend globally.
        residual_block_indices: Layers (0-based) followed by a residual 1x1-3x3-1x1 convolution block.
        use_absolute_position_embeddings: Add learned absolute position embeddings to the patches.
        use_relative_position_embeddings: Add decomposed relative position terms to the attention scores.
        window_size: Side of the square attention windows (0: the listed layers attend globally too, as
            in transformers).
    """

    model_type: ClassVar[str] = "vitdet"

    hidden_size: int = Field(default=768, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=12, ge=1)
    mlp_ratio: int | float = 4
    hidden_act: ActivationName = "gelu"
    dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    image_size: int | tuple[int, int] = 224
    pretrain_image_size: int | tuple[int, int] = 224
    patch_size: Annotated[int, square_patch(16)] = Field(default=16, ge=1)
    num_channels: int = Field(default=3, ge=1)
    qkv_bias: bool = True
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    window_block_indices: list[int] = []
    residual_block_indices: list[int] = []
    use_absolute_position_embeddings: bool = True
    use_relative_position_embeddings: bool = False
    window_size: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check_shapes(self) -> VitDetConfig:
        check_positive_mlp_ratio(self.mlp_ratio, self.hidden_size)
        check_heads_divide(self.hidden_size, self.num_attention_heads)
        check_layer_indices("window_block_indices", self.window_block_indices, self.num_hidden_layers)
        check_layer_indices("residual_block_indices", self.residual_block_indices, self.num_hidden_layers)
        check_image_holds_patches("image_size", self.image_size, self.patch_size)
        check_image_holds_patches(
            "pretrain_image_size",
            self.pretrain_image_size,
            self.patch_size,
            square_grid=self.use_absolute_position_embeddings,
        )
        return self

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(self.num_hidden_layers)

    @property
    def position_grid(self) -> int:
        """Side of the square grid of absolute position embeddings (``pretrain_image_size // patch_size``)."""
        return image_pair(self.pretrain_image_size)[0] // self.patch_size

    @property
    def global_attention_grid(self) -> tuple[int, int]:
        """Patch grid of ``image_size``: the size of the global layers' relative position tables."""
        height, width = image_pair(self.image_size)
        return height // self.patch_size, width // self.patch_size
