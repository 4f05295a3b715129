"""ConvNeXt backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ConvNeXt (backbones-convnextv2, ...) use ``ConvNextFamilyConfig``, ``ConvNextBackbone``
(its ``_make_block`` hook) and the public modules of :mod:`backbones_convnext.blocks`.
"""

from backbones.lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
