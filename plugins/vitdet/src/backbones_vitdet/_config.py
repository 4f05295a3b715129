"""Configuration of ViTDet. Field names and defaults follow transformers' VitDetConfig."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from backbones.activations import ACTIVATIONS
from backbones.validation import check_image_holds_patches, check_layer_indices, check_positive_mlp_ratio, image_pair

from .configs import WindowedViTConfig

__all__ = ["ACTIVATIONS", "VitDetConfig"]

"""Supported values of ``hidden_act``."""


class VitDetConfig(WindowedViTConfig):
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

    mlp_ratio: int | float = 4
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    residual_block_indices: list[int] = []
    use_relative_position_embeddings: bool = False
    window_size: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check_shapes(self) -> VitDetConfig:
        check_positive_mlp_ratio(self.mlp_ratio, self.hidden_size)
        check_layer_indices("residual_block_indices", self.residual_block_indices, self.num_hidden_layers)
        check_image_holds_patches("image_size", self.image_size, self.patch_size)
        return self

    @property
    def global_attention_grid(self) -> tuple[int, int]:
        """Patch grid of ``image_size``: the size of the global layers' relative position tables."""
        height, width = image_pair(self.image_size)
        return height // self.patch_size, width // self.patch_size
