"""Configuration of DINOv2. Field names and defaults follow transformers' Dinov2Config (dinov2-base)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from backbones.activations import ACTIVATIONS
from backbones.validation import check_image_holds_patches, check_positive_mlp_ratio, image_pair, square_patch

from .configs import ViTLayerConfig

__all__ = ["ACTIVATIONS", "Dinov2Config"]

"""Supported values of ``hidden_act``."""


class Dinov2Config(ViTLayerConfig):
    """Configuration of a DINOv2 backbone; the defaults describe dinov2-base (ViT-B/14).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings (with the class token and position embeddings added), ``stageK`` the output of
    transformer layer ``K``. Every stage has ``hidden_size`` channels and stride ``patch_size``.

    Args:
        hidden_size: Width of the token embeddings (the channels of every feature map).
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        mlp_ratio: Hidden width of each MLP relative to ``hidden_size`` (the SwiGLU FFN keeps about two
            thirds of it, rounded up to a multiple of 8).
        hidden_act: Activation of the plain MLP (one of :data:`ACTIVATIONS`); the SwiGLU FFN always uses SiLU.
        hidden_dropout_prob: Dropout on the embeddings (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation.
        layer_norm_eps: Epsilon of every layer norm.
        image_size: Pre-training image size (one int or ``(height, width)``); sizes the position
            embeddings, which are resampled for any other input size.
        patch_size: Side of the square patches (the stride of every stage).
        num_channels: Input channels.
        qkv_bias: Whether the query, key and value projections have a bias.
        layerscale_value: Initial value of the per-channel layer-scale factors.
        drop_path_rate: Stochastic-depth rate of every residual branch (training only).
        use_swiglu_ffn: Use a SwiGLU feed-forward network instead of the two-layer MLP (ViT-g).
        apply_layernorm: Pass each feature map through the final layer norm (``layernorm``).
        reshape_hidden_states: Return feature maps as ``(batch, channels, height, width)`` without the
            class token; when False they are the ``(batch, 1 + height * width, channels)`` token sequences.
        use_mask_token: Whether checkpoints hold a mask token (used only in masked pre-training; the
            backbone never builds it, so its key is reported as unused when loading).
    """

    model_type: ClassVar[str] = "dinov2"

    mlp_ratio: int | float = 4
    patch_size: Annotated[int, square_patch(14)] = Field(default=14, ge=1)
    layerscale_value: float = 1.0
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    use_swiglu_ffn: bool = False
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True
    use_mask_token: bool = True

    @model_validator(mode="after")
    def _check_shapes(self) -> Dinov2Config:
        check_positive_mlp_ratio(self.mlp_ratio, self.hidden_size)
        check_image_holds_patches("image_size", self.image_size, self.patch_size, square_grid=True)
        return self

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token (a subclass's stem may add more, e.g. registers)."""
        return 1

    @property
    def position_grid(self) -> int:
        """Side of the square grid of pre-training position embeddings (``image_size // patch_size``)."""
        return image_pair(self.image_size)[0] // self.patch_size
