"""NAT backbone for backbones. Public names are imported on first access (no torch at import).

Plugins that build on NAT use the public modules of :mod:`backbones_nat.blocks` (semver-stable API).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones.lazy import lazy_getattr

__all__ = ["NatBackbone", "NatConfig", "neighborhood_attention_2d"]

_EXPORTS = {"NatConfig": "._config", "NatBackbone": "._model", "neighborhood_attention_2d": ".attention"}

if TYPE_CHECKING:
    from ._config import NatConfig
    from ._model import NatBackbone
    from .attention import neighborhood_attention_2d


__getattr__ = lazy_getattr(__name__, _EXPORTS)
