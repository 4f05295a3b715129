"""Swin Transformer backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on Swin (backbones-swinv2, backbones-maskformer-swin) use ``SwinFamilyConfig``,
``SwinBackbone`` (its hooks are listed in its module docstring) and the public modules of
:mod:`backbones_swin.blocks`.
"""

from backbones.lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
