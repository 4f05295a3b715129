"""ViTDet backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ViTDet use the public modules of :mod:`backbones_vitdet.blocks` (semver-stable API).
"""

from backbones.lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
