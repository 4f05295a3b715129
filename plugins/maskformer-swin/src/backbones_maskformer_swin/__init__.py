"""MaskFormer's Swin backbone for backbones. Public names are imported on first access (no torch at import)."""

from backbones.lazy import attach_stub

__getattr__, __dir__, _lazy = attach_stub(__name__, __file__)
__all__ = sorted([*_lazy, "MASKFORMER_BACKBONE_PREFIX"])

MASKFORMER_BACKBONE_PREFIX = "model.pixel_level_module.encoder."
"""Key prefix of the backbone inside transformers' MaskFormer segmentation checkpoints
(``MaskFormerForInstanceSegmentation``); pass it as ``checkpoint_prefix`` with ``config_key="backbone_config"``."""
