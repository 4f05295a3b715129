"""Necks: a feature pyramid over a backbone, itself a backbone.

* :class:`SimpleFeaturePyramid`: ViTDet's pyramid from one map (a plain ViT's) to strides 4 to 32.
* :class:`FeaturePyramid`: an FPN (top-down pathway) over a multi-scale backbone's stages.
* :class:`PyramidBackbone`: their base class (``isinstance(model, PyramidBackbone)``: a neck).

A neck's stages are the wrapped backbone's followed by the pyramid levels (``p2`` ... named after their
strides, as detectron2 names them); by default it outputs every level. It saves and loads with its weights
like any backbone (its ``config.json`` nests the wrapped backbone's as ``backbone_config``; backbones-core
registers the model types ``simple_feature_pyramid`` and ``feature_pyramid``)::

    from backbones import AutoBackbone
    from backbones.necks import SimpleFeaturePyramid

    neck = SimpleFeaturePyramid.from_backbone(AutoBackbone.from_pretrained("path/to/vitdet"), out_channels=256)
    neck.output_shape()  # {'p2': (256, 4), 'p3': (256, 8), 'p4': (256, 16), 'p5': (256, 32)}
    neck.save_pretrained("neck")
    AutoBackbone.from_pretrained("neck")  # the same neck, weights included

Importing this package is cheap; the classes are imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "FeaturePyramid": "._model",
    "FeaturePyramidConfig": "._config",
    "LayerNorm2d": "._model",
    "PyramidBackbone": "._model",
    "SimpleFeaturePyramid": "._model",
    "SimpleFeaturePyramidConfig": "._config",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ._config import FeaturePyramidConfig as FeaturePyramidConfig
    from ._config import SimpleFeaturePyramidConfig as SimpleFeaturePyramidConfig
    from ._model import FeaturePyramid as FeaturePyramid
    from ._model import LayerNorm2d as LayerNorm2d
    from ._model import PyramidBackbone as PyramidBackbone
    from ._model import SimpleFeaturePyramid as SimpleFeaturePyramid


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'backbones.necks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
