"""Public config base of DINOv3-style vision transformers (DINOv3 ViT, Sapiens2): the fields of their rotary
positions, register tokens, separate projection biases and optionally gated feed-forward network, in one place.
Imports no torch, so a config can be built and listed without it.

Like :mod:`backbones_dinov3_vit.blocks`, every name in ``__all__`` is part of backbones-dinov3-vit's public API
and follows semantic versioning: within a ``0.1.x`` series no field is removed or renamed and no default
changes, so a dependent plugin pins ``backbones-dinov3-vit>=0.1,<0.2``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from backbones_dinov2.configs import PlainViTConfig

__all__ = ["RotaryViTConfig"]


class RotaryViTConfig(PlainViTConfig):
    """Base of the config of a DINOv3-style vision transformer; the defaults describe DINOv3 ViT-S/16. Positions
    enter through 2-D rotary embeddings of the patch centres (so heads must be a multiple of 4 wide and any
    input size works). It adds to :class:`backbones_dinov2.configs.PlainViTConfig` (whose fields it keeps):

    Here ``image_size`` is recorded for transformers and sizes nothing (there is no position table), and
    ``hidden_act`` is the gate's activation when ``use_gated_mlp``.

    Args:
        intermediate_size: Hidden width of the feed-forward network.
        attention_dropout: Dropout on attention probabilities (training only).
        rope_theta: Base period of the rotary embeddings.
        query_bias: Bias on the query projection.
        key_bias: Bias on the key projection.
        value_bias: Bias on the value projection.
        proj_bias: Bias on the attention output projection.
        mlp_bias: Biases in the feed-forward network.
        layerscale_value: Initial value of the per-channel layer-scale factors.
        drop_path_rate: Stochastic-depth rate of every residual branch (training only).
        use_gated_mlp: Use a gated feed-forward network (``down(act(gate(x)) * up(x))``, SwiGLU with SiLU).
        num_register_tokens: Register tokens placed after the class token.
        pos_embed_shift: In training, shift the patch coordinates by a uniform draw in ``[-shift, shift]`` per
            axis (``None``: off).
        pos_embed_jitter: In training, scale each coordinate axis by a log-uniform draw in
            ``[1/jitter, jitter]`` (``None``: off).
        pos_embed_rescale: In training, scale both axes by one log-uniform draw in ``[1/rescale, rescale]``
            (``None``: off).
        reshape_hidden_states: Return feature maps as ``(batch, channels, height, width)``; when False they
            are the patch tokens ``(batch, height * width, channels)`` (prefix tokens dropped).
    """

    rotary_heads: ClassVar[bool] = True

    hidden_size: int = Field(default=384, ge=1)
    num_attention_heads: int = Field(default=6, ge=1)
    intermediate_size: int = Field(default=1536, ge=1)
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    rope_theta: float = Field(default=100.0, gt=0)
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
    reshape_hidden_states: bool = True

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.num_register_tokens
