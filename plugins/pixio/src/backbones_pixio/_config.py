"""Configuration of Pixio. Field names and defaults follow transformers' PixioConfig (pixio-vith16)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from backbones.validation import check_image_holds_patches, image_pair
from backbones_dinov2.configs import ViTLayerConfig

__all__ = ["PixioConfig"]


class PixioConfig(ViTLayerConfig):
    """Configuration of a Pixio backbone; the defaults describe pixio-vith16 (ViT-H/16, 8 class tokens).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings with the class tokens and position embeddings, ``stageK`` the output of transformer
    layer ``K``. Every stage has ``hidden_size`` channels and stride ``patch_size``.

    Args:
        hidden_size: Width of the token embeddings (the channels of every feature map).
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        mlp_ratio: Hidden width of each MLP relative to ``hidden_size`` (an integer, as transformers requires).
        hidden_act: Activation of the MLP (a name of :data:`backbones.activations.ACTIVATIONS`).
        hidden_dropout_prob: Dropout on the embeddings and on both residual branches (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the initialisation.
        layer_norm_eps: Epsilon of every layer norm.
        image_size: Pre-training image size (one int or ``(height, width)``, a square grid of patches); sizes
            the position embeddings, which are resampled for any other input size.
        patch_size: Side of the square patches (the stride of every stage).
        num_channels: Input channels.
        qkv_bias: Whether the query, key and value projections have a bias.
        drop_path_rate: Stochastic-depth rate of every residual branch (training only).
        apply_layernorm: Pass each feature map through the backbone's layer norm (``layernorm``).
        reshape_hidden_states: Return feature maps as ``(batch, channels, height, width)`` without the
            class tokens; when False they are the ``(batch, n_cls_tokens + height * width, channels)``
            token sequences.
        n_cls_tokens: Class tokens in front of the patches, each with its own position embedding (the
            pooled output of transformers' ``PixioModel`` is their mean).
    """

    model_type: ClassVar[str] = "pixio"

    hidden_size: int = Field(default=1280, ge=1)
    num_hidden_layers: int = Field(default=32, ge=1)
    num_attention_heads: int = Field(default=16, ge=1)
    mlp_ratio: int = Field(default=4, ge=1)
    image_size: int | tuple[int, int] = 256
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True
    n_cls_tokens: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _check_shapes(self) -> PixioConfig:
        check_image_holds_patches("image_size", self.image_size, self.patch_size, square_grid=True)
        return self

    @property
    def position_grid(self) -> int:
        """Side of the square grid of pre-training position embeddings (``image_size // patch_size``)."""
        return image_pair(self.image_size)[0] // self.patch_size
