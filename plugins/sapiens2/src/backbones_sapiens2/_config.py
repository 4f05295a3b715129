"""Configuration of Sapiens2. Field names and defaults follow transformers' Sapiens2Config (the 0.4B model)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from backbones.validation import ActivationName
from backbones_dinov3_vit.configs import RotaryViTConfig

__all__ = ["Sapiens2Config"]


class Sapiens2Config(RotaryViTConfig):
    """Configuration of a Sapiens2 vision transformer; the defaults describe the 0.4B model (sapiens2-*-0.4b).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings behind the class and register ("storage") tokens, ``stageK`` the output of transformer
    layer ``K``. Every stage has ``hidden_size`` channels and stride ``patch_size``. Positions enter through
    2-D rotary embeddings of the patch centres (DINOv3's), so any input size works.

    Every field of :class:`backbones_dinov3_vit.configs.RotaryViTConfig` and of
    :class:`backbones_dinov2.configs.PlainViTConfig` keeps the meaning documented there, with this model's
    defaults (here ``num_attention_heads`` counts the query heads, ``hidden_act`` is the gate's activation and
    ``layerscale_value`` scales the attention branch only); Sapiens2 adds:

    Args:
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

    hidden_size: int = Field(default=1024, ge=1)
    intermediate_size: int = Field(default=4096, ge=1)
    num_hidden_layers: int = Field(default=24, ge=1)
    num_attention_heads: int = Field(default=16, ge=1)
    hidden_act: ActivationName = "silu"
    key_bias: bool = True
    use_gated_mlp: bool = True
    num_register_tokens: int = Field(default=8, ge=0)
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
