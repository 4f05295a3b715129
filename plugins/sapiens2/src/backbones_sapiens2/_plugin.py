"""Entry point of backbones-sapiens2: registers the model type lazily (imports neither torch nor the model)."""

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
        "sapiens2",
        config="backbones_sapiens2._config:Sapiens2Config",
        model="backbones_sapiens2._model:Sapiens2Backbone",
        description="Sapiens2 (human-centric vision transformer with 2-D rotary positions, 2026)",
        # The facebook/sapiens2-* checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="Sapiens2ImageProcessor",
        image_processor_classes={"Sapiens2ImageProcessor": "backbones_sapiens2._processing:Sapiens2ImageProcessor"},
    )
