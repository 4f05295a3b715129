"""backbones-core's own plugin module: registers the necks as model types, so a saved neck loads with
:meth:`backbones.AutoBackbone.from_pretrained` like any backbone (imports neither torch nor the necks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..hookspecs import Register

BACKBONES_PLUGIN_API = "1.1"


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "simple_feature_pyramid",
        config="backbones.necks._config:SimpleFeaturePyramidConfig",
        model="backbones.necks._model:SimpleFeaturePyramid",
        description="Neck: ViTDet's simple feature pyramid over any backbone (strides 4-32 from one map)",
    )
    register(
        "feature_pyramid",
        config="backbones.necks._config:FeaturePyramidConfig",
        model="backbones.necks._model:FeaturePyramid",
        description="Neck: a feature pyramid network (FPN, top-down) over a multi-scale backbone",
    )
