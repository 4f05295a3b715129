"""Configuration of DINOv2 with registers: DINOv2's, plus the register count, with transformers'
Dinov2WithRegistersConfig defaults (patch 16, 4 registers)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from backbones_dinov2 import Dinov2Config

__all__ = ["Dinov2WithRegistersConfig"]


class Dinov2WithRegistersConfig(Dinov2Config):
    """Configuration of a DINOv2 backbone with register tokens; the defaults describe the base size
    (ViT-B/16, 4 registers) as transformers' ``Dinov2WithRegistersConfig`` does.

    Every field of :class:`backbones_dinov2.Dinov2Config` keeps its meaning and its checks (heads dividing
    the width, a square grid of pre-training positions, ...); the differences are:

    Args:
        num_register_tokens: Register tokens inserted after the class token. They carry no position
            embedding and are dropped from the feature maps.
        patch_size: Side of the square patches; 16 by default (DINOv2's is 14), though the released
            checkpoints use 14.
        use_mask_token: Not a field of this architecture (its checkpoints always hold a mask token, which
            the backbone never builds); kept only for the inherited checks and never written.
    """

    model_type: ClassVar[str] = "dinov2_with_registers"

    patch_size: int = Field(default=16, ge=1)
    num_register_tokens: int = Field(default=4, ge=0)
    use_mask_token: bool = Field(default=True, exclude=True)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.num_register_tokens
