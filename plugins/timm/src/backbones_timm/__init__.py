"""timm models as backbones. Public names are imported on first access (neither torch nor timm at import)."""

from backbones.lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
