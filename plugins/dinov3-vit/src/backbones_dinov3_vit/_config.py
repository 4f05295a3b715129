"""Configuration of DINOv3 ViT. Field names and defaults follow transformers' DINOv3ViTConfig (ViT-S/16)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig
from backbones.validation import ActivationName, check_rotary_heads, numbered_stage_names, square_patch

__all__ = ["Dinov3ViTConfig"]


class Dinov3ViTConfig(BackboneConfig):
    """Configuration of a DINOv3 vision transformer; the defaults describe ViT-S/16 (dinov3-vits16).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings with the class and register tokens, ``stageK`` the output of transformer layer ``K``.
    Every stage has ``hidden_size`` channels and stride ``patch_size``. Positions enter through 2-D rotary
    embeddings of the patch tokens' centres, so there is no position table and any input size works.

    Args:
        patch_size: Side of the square patches (the stride of every stage).
        hidden_size: Width of the tokens (the channels of every feature map).
        intermediate_size: Hidden width of the feed-forward network.
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size`` into head widths that
            are multiples of 4 (the rotary embedding splits each head into two axes of sine-cosine pairs).
        hidden_act: Activation of the feed-forward network (the gate's, when ``use_gated_mlp``).
        attention_dropout: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation.
        layer_norm_eps: Epsilon of every layer norm.
        rope_theta: Base period of the rotary embeddings.
        image_size: Pre-training image size; recorded for transformers, it sizes nothing here.
        num_channels: Input channels.
        query_bias: Bias on the query projection.
        key_bias: Bias on the key projection.
        value_bias: Bias on the value projection.
        proj_bias: Bias on the attention output projection.
        mlp_bias: Biases in the feed-forward network.
        layerscale_value: Initial value of the per-channel layer-scale factors.
        drop_path_rate: Stochastic-depth rate of every residual branch (training only).
        use_gated_mlp: Use a gated feed-forward network (``down(act(gate(x)) * up(x))``, SwiGLU with SiLU).
        num_register_tokens: Register tokens placed after the class token.
        pos_embed_shift: In training, shift the patch coordinates by a uniform draw in
            ``[-shift, shift]`` per axis (``None``: off).
        pos_embed_jitter: In training, scale each coordinate axis by a log-uniform draw in
            ``[1/jitter, jitter]`` (``None``: off).
        pos_embed_rescale: In training, scale both axes by one log-uniform draw in
            ``[1/rescale, rescale]`` (``None``: off).
        apply_layernorm: Pass the feature maps of every stage but the last through the final norm
            (the last stage's map is always normalised, as in transformers).
        reshape_hidden_states: Return feature maps as ``(batch, channels, height, width)``; when False
            they are the patch tokens ``(batch, height * width, channels)`` (prefix tokens dropped).
    """

    model_type: ClassVar[str] = "dinov3_vit"

    patch_size: Annotated[int, square_patch(16)] = Field(default=16, ge=1)
    hidden_size: int = Field(default=384, ge=1)
    intermediate_size: int = Field(default=1536, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=6, ge=1)
    hidden_act: ActivationName = "gelu"
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    initializer_range: float = 0.02
    layer_norm_eps: float = Field(default=1e-5, gt=0)
    rope_theta: float = Field(default=100.0, gt=0)
    image_size: int | tuple[int, int] = 224
    num_channels: int = Field(default=3, ge=1)
    query_bias: bool = True
    key_bias: bool = False
    value_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    layerscale_value: float = 1.0
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    use_gated_mlp: bool = False
    num_register_tokens: int = Field(default=0, ge=0)
    pos_embed_shift: float | None = Field(default=None, ge=0)
    pos_embed_jitter: float | None = Field(default=None, ge=1)
    pos_embed_rescale: float | None = Field(default=2.0, ge=1)
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True

    @model_validator(mode="after")
    def _check_shapes(self) -> Dinov3ViTConfig:
        check_rotary_heads(self.hidden_size, self.num_attention_heads)
        return self

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(self.num_hidden_layers)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.num_register_tokens
