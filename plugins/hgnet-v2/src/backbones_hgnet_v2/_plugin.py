"""Entry point of backbones-hgnet-v2: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones import hookimpl

if TYPE_CHECKING:
    from backbones.hookspecs import Register

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"  # 1.1: it declares its image processor


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "hgnet_v2",
        config="backbones_hgnet_v2._config:HGNetV2Config",
        model="backbones_hgnet_v2._model:HGNetV2Backbone",
        description="HGNetV2 (PP-HGNetV2, the backbone of D-FINE and DEIM, 2024)",
        # D-FINE and DEIM checkpoints' preprocessor_config.json names RT-DETR's processor (a family of core's);
        # also used when one names none.
        image_processor="RTDetrImageProcessor",
    )
