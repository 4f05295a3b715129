"""NAT backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on NAT use the public modules of :mod:`backbones_nat.blocks` (semver-stable API).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["NatBackbone", "NatConfig", "neighborhood_attention_2d"]

_EXPORTS = {"NatConfig": "._config", "NatBackbone": "._model", "neighborhood_attention_2d": ".attention"}

if TYPE_CHECKING:
    from ._config import NatConfig
    from ._model import NatBackbone
    from .attention import neighborhood_attention_2d


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
