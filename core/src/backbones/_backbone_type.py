"""`BackboneType`: which kind of backbone a model is, with transformers' values (heads branch on it)."""

from __future__ import annotations

import enum

__all__ = ["BackboneType"]


class BackboneType(str, enum.Enum):
    """The kind of a backbone, as transformers' ``BackboneType`` names it.

    A ``str`` enum, so ``backbone.backbone_type == "timm"`` holds as well as
    ``backbone.backbone_type is BackboneType.TIMM``.
    """

    TIMM = "timm"
    """A timm model wrapped as a backbone (``backbones-timm``)."""
    TRANSFORMERS = "transformers"
    """Every other backbone: an implementation of a transformers backbone architecture."""
