"""Configuration of Sapiens2. Field names and defaults follow transformers' Sapiens2Config (the 0.4B model)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig
from backbones.validation import ActivationName, check_rotary_heads, numbered_stage_names, square_patch

__all__ = ["Sapiens2Config"]


class Sapiens2Config(BackboneConfig):
    """Configuration of a Sapiens2 vision transformer; the defaults describe the 0.4B model (sapiens2-*-0.4b).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings behind the class and register ("storage") tokens, ``stageK`` the output of transformer
    layer ``K``. Every stage has ``hidden_size`` channels and stride ``patch_size``. Positions enter through
    2-D rotary embeddings of the patch centres (DINOv3's), so any input size works.

    Args:
        patch_size: Side of the square patches (the stride of every stage).
        hidden_size: Width of the tokens (the channels of every feature map).
        intermediate_size: Hidden width of the feed-forward network.
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Query heads per layer; must divide ``hidden_size`` into head widths that are
            multiples of 4 (the rotary embedding gives each head a sine-cosine pair per axis).
        hidden_act: Activation of the feed-forward network (the gate's, when ``use_gated_mlp``).
        attention_dropout: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the truncated-normal initialisation.
        rope_theta: Base period of the rotary embeddings.
        image_size: Pre-training image size; recorded for transformers' task heads, it sizes nothing here.
        num_channels: Input channels.
        query_bias: Bias on the query projection.
        key_bias: Bias on the key projection.
        value_bias: Bias on the value projection.
        proj_bias: Bias on the attention output projection.
        mlp_bias: Biases in the feed-forward network.
        layerscale_value: Initial value of the per-channel layer scale on the attention branch.
        drop_path_rate: Stochastic-depth rate of every residual branch (training only).
        use_gated_mlp: Gated feed-forward network (``w3(act(gate) * up)``, SwiGLU with SiLU).
        num_register_tokens: Register tokens placed after the class token.
        pos_embed_shift: In training, shift the patch coordinates by a uniform draw in ``[-shift, shift]``
            per axis (``None``: off).
        pos_embed_jitter: In training, scale each coordinate axis by a log-uniform draw in
            ``[1/jitter, jitter]`` (``None``: off).
        pos_embed_rescale: In training, scale both axes by one log-uniform draw in ``[1/rescale, rescale]``
            (``None``: off).
        reshape_hidden_states: Return feature maps as ``(batch, channels, height, width)``; when False they
            are the patch tokens ``(batch, height * width, channels)`` (prefix tokens dropped).
        use_mask_token: Whether the pre-training checkpoint has a mask token; recorded for transformers, the
            backbone never masks patches and never builds it.
        rms_norm_eps: Epsilon of every RMS norm.
        normalize_backbone_outputs: Pass every stage's feature map through the final RMS norm.
        use_qk_norm: RMS-normalise each head's queries and keys before the rotation.
        num_key_value_heads_per_layer: Key/value heads of each layer (equal to ``num_attention_heads``: full
            multi-head attention; fewer: grouped-query attention). ``None``: full attention in the first
            ``num_first_full_attention_layers`` and last ``num_last_full_attention_layers`` layers and
            ``num_key_value_attention_heads`` in the others (see :attr:`key_value_heads`).
        num_key_value_attention_heads: Key/value heads of the grouped-query layers when
            ``num_key_value_heads_per_layer`` is ``None``.
        num_first_full_attention_layers: Leading layers with full attention (when the list is ``None``).
        num_last_full_attention_layers: Trailing layers with full attention (when the list is ``None``).
    """

    model_type: ClassVar[str] = "sapiens2"
    # Fields of transformers' config that only its task heads read.
    reference_config_keys: ClassVar[frozenset[str]] = frozenset(
        {"head_config", "semantic_loss_ignore_index", "flip_pairs"}
    )

    patch_size: Annotated[int, square_patch(16)] = Field(default=16, ge=1)
    hidden_size: int = Field(default=1024, ge=1)
    intermediate_size: int = Field(default=4096, ge=1)
    num_hidden_layers: int = Field(default=24, ge=1)
    num_attention_heads: int = Field(default=16, ge=1)
    hidden_act: ActivationName = "silu"
    attention_dropout: float = Field(default=0.0, ge=0, lt=1)
    initializer_range: float = 0.02
    rope_theta: float = Field(default=100.0, gt=0)
    image_size: int | tuple[int, int] = 224
    num_channels: int = Field(default=3, ge=1)
    query_bias: bool = True
    key_bias: bool = True
    value_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    layerscale_value: float = 1.0
    drop_path_rate: float = Field(default=0.0, ge=0, lt=1)
    use_gated_mlp: bool = True
    num_register_tokens: int = Field(default=8, ge=0)
    pos_embed_shift: float | None = Field(default=None, ge=0)
    pos_embed_jitter: float | None = Field(default=None, ge=1)
    pos_embed_rescale: float | None = Field(default=2.0, ge=1)
    reshape_hidden_states: bool = True
    use_mask_token: bool = False
    rms_norm_eps: float = Field(default=1e-6, gt=0)
    normalize_backbone_outputs: bool = True
    use_qk_norm: bool = True
    num_key_value_heads_per_layer: list[int] | None = None
    num_key_value_attention_heads: int = Field(default=8, ge=1)
    num_first_full_attention_layers: int = Field(default=8, ge=0)
    num_last_full_attention_layers: int = Field(default=8, ge=0)

    @model_validator(mode="after")
    def _check_shapes(self) -> Sapiens2Config:
        check_rotary_heads(self.hidden_size, self.num_attention_heads)
        per_layer = self.num_key_value_heads_per_layer
        if per_layer is not None and len(per_layer) != self.num_hidden_layers:
            raise ValueError(
                f"num_key_value_heads_per_layer has {len(per_layer)} entries but num_hidden_layers is "
                f"{self.num_hidden_layers}; give one key/value head count per layer (or null for the default pattern)"
            )
        field = "num_key_value_heads_per_layer" if per_layer is not None else "num_key_value_attention_heads"
        for layer, heads in enumerate(self.key_value_heads):
            if heads < 1 or self.num_attention_heads % heads:
                where = f"[{layer}]" if per_layer is not None else ""
                raise ValueError(
                    f"{field}{where}={heads} must be a positive divisor of num_attention_heads="
                    f"{self.num_attention_heads} (each key/value head serves a whole group of query heads)"
                )
        return self

    @property
    def key_value_heads(self) -> list[int]:
        """Key/value heads of every layer: ``num_key_value_heads_per_layer``, or transformers' default pattern
        (full attention in the first and last layers, ``num_key_value_attention_heads`` in between)."""
        if self.num_key_value_heads_per_layer is not None:
            return list(self.num_key_value_heads_per_layer)
        last_grouped = self.num_hidden_layers - self.num_last_full_attention_layers
        return [
            self.num_attention_heads
            if layer < self.num_first_full_attention_layers or layer >= last_grouped
            else self.num_key_value_attention_heads
            for layer in range(self.num_hidden_layers)
        ]

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(self.num_hidden_layers)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.num_register_tokens
