"""Configuration of the TIPSv2 vision encoder: DINOv2's fields (it is a DINOv2-with-registers ViT), with
transformers' Tipsv2VisionConfig defaults (ViT-B/14 at 448 pixels, 1 register)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from backbones import BackboneConfig, ConfigError
from backbones_dinov2 import Dinov2Config

__all__ = ["Tipsv2VisionConfig"]

_FULL_MODEL_TYPE = "tipsv2"
"""The model type of a full image-text checkpoint's config.json, which nests this config as ``vision_config``."""


class Tipsv2VisionConfig(Dinov2Config):
    """Configuration of a TIPSv2 vision encoder; the defaults describe tipsv2-b14 (ViT-B/14, 448 pixels, one
    register) as transformers' ``Tipsv2VisionConfig`` does.

    Every field of :class:`backbones_dinov2.Dinov2Config` keeps its meaning and its checks (heads dividing the
    width, a square grid of pre-training positions, ...); the differences are:

    Args:
        num_register_tokens: Register tokens inserted after the class token (TIPSv2 trains its register as a
            second class token, aligned with synthetic captions). They carry no position embedding.
        image_size: Pre-training image size; 448 by default.
        use_mask_token: Not a field of this architecture (its checkpoints always hold a mask token, which
            the backbone never builds); kept only for the inherited checks and never written.

    ``from_dict`` also reads the ``config.json`` of a full image-text checkpoint (``model_type`` ``"tipsv2"``):
    the backbone is its ``vision_config``.
    """

    model_type: ClassVar[str] = "tipsv2_vision_model"

    image_size: int | tuple[int, int] = 448
    num_register_tokens: int = Field(default=1, ge=0)
    use_mask_token: bool = Field(default=True, exclude=True)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.num_register_tokens

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> BackboneConfig:
        """Build a config from a ``config.json`` dictionary, this encoder's or a full TIPSv2 model's.

        A full model's file (``model_type`` ``"tipsv2"``) holds the vision config as ``vision_config`` (absent
        or null: the defaults, as in transformers); its text config and other keys are not the backbone's.

        Raises:
            ConfigError: ``vision_config`` is neither an object nor null, or the values are invalid.
        """
        if isinstance(data, dict) and data.get("model_type") == _FULL_MODEL_TYPE:
            nested = data.get("vision_config")
            if nested is None:
                nested = {}
            if not isinstance(nested, dict):
                raise ConfigError(
                    f"a {_FULL_MODEL_TYPE!r} config holds the vision encoder's config as a 'vision_config' object, "
                    f"got {type(nested).__name__}; give it the Tipsv2VisionConfig fields"
                )
            data = {**nested, "model_type": cls.model_type}
        return super().from_dict(data, **overrides)
