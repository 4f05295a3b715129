"""ResNet backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on ResNet use the public modules of :mod:`backbones_resnet.blocks` (semver-stable API).
"""

from backbones.lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
