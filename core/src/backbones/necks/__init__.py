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

from ..lazy import attach_stub

__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
