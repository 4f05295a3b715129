"""Configuration of DINOv3 ViT. Field names and defaults follow transformers' DINOv3ViTConfig (ViT-S/16)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .configs import RotaryViTConfig

__all__ = ["Dinov3ViTConfig"]


class Dinov3ViTConfig(RotaryViTConfig):
    """Configuration of a DINOv3 vision transformer; the defaults describe ViT-S/16 (dinov3-vits16).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the stem is the
    patch embeddings with the class and register tokens, ``stageK`` the output of transformer layer ``K``.
    Every stage has ``hidden_size`` channels and stride ``patch_size``. Positions enter through 2-D rotary
    embeddings of the patch tokens' centres, so there is no position table and any input size works.

    Every field of :class:`backbones_dinov3_vit.configs.RotaryViTConfig` (whose defaults are this model's)
    and of :class:`backbones_dinov2.configs.PlainViTConfig` keeps the meaning documented there; DINOv3 adds:

    Args:
        layer_norm_eps: Epsilon of every layer norm.
        apply_layernorm: Pass the feature maps of every stage but the last through the final norm
            (the last stage's map is always normalised, as in transformers).
    """

    model_type: ClassVar[str] = "dinov3_vit"

    layer_norm_eps: float = Field(default=1e-5, gt=0)
    apply_layernorm: bool = True
