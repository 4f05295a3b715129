"""NAT backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on NAT use the public modules of :mod:`backbones_nat.blocks` (semver-stable API).
"""

from backbones.lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
