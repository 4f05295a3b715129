"""Entry point of backbones-pvt-v2: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones import hookimpl

if TYPE_CHECKING:
    from backbones.hookspecs import Register

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"  # 1.1: it declares its own image processor


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "pvt_v2",
        config="backbones_pvt_v2._config:PvtV2Config",
        model="backbones_pvt_v2._model:PvtV2Backbone",
        description="PVTv2 (PVT v2: Improved Baselines with Pyramid Vision Transformer, 2021)",
        # The OpenGVLab/pvt_v2_* checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="PvtImageProcessor",
        image_processor_classes={"PvtImageProcessor": "backbones_pvt_v2._processing:PvtImageProcessor"},
    )
