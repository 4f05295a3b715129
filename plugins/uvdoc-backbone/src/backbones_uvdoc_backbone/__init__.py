"""UVDoc's backbone for backbones. Public names are imported on first access (no torch at import)."""

from backbones.lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
