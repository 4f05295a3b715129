"""Entry point of backbones-rf-detr-dinov2: registers the model type lazily (imports neither torch nor the
model)."""

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
        "rf_detr_dinov2",
        config="backbones_rf_detr_dinov2._config:RfDetrDinov2Config",
        model="backbones_rf_detr_dinov2._model:RfDetrDinov2Backbone",
        description="DINOv2 with windowed attention of RF-DETR (Real-time detection transformers, 2025)",
        # RF-DETR checkpoints' preprocessor_config.json names it. transformers maps no processor to this
        # model type (only to the detector's, rf_detr), so neither does this plugin: no fallback.
        image_processor_types=["RfDetrImageProcessor"],
        image_processor_classes={"RfDetrImageProcessor": "backbones_rf_detr_dinov2._processing:RfDetrImageProcessor"},
    )
