"""Configuration of MaskFormer's Swin backbone. Field names and defaults follow transformers'
MaskFormerSwinConfig (swin-tiny); every field is shared with Swin and defined in backbones-swin."""

from __future__ import annotations

from typing import Any, ClassVar

from backbones_swin import SwinFamilyConfig

__all__ = ["MaskFormerSwinConfig"]


class MaskFormerSwinConfig(SwinFamilyConfig):
    """Configuration of MaskFormer's Swin backbone (defaults: transformers' ``MaskFormerSwinConfig()``).

    The fields are those of :class:`backbones_swin.SwinFamilyConfig` (Swin's, without ``encoder_stride``);
    ``use_absolute_embeddings`` must stay ``False``. A config whose ``model_type`` is ``"swin"`` is read too:
    MaskFormer checkpoints saved before transformers 5 describe their backbone that way, and MaskFormer
    itself turns such a config into this one.
    """

    model_type: ClassVar[str] = "maskformer-swin"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"hidden_size"})
    """Keys of transformers' config.json without effect here: transformers' value derived from embed_dim and depths."""
    absolute_embeddings_refused_by: ClassVar[str | None] = "MaskFormerSwin"

    def __init__(self, /, **data: Any) -> None:
        if data.get("model_type") == "swin":
            data = {key: value for key, value in data.items() if key != "model_type"}
        super().__init__(**data)
