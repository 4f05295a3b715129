"""Entry point of backbones-rt-detr-resnet: registers the model type lazily (imports neither torch nor the model)."""

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
        "rt_detr_resnet",
        config="backbones_rt_detr_resnet._config:RTDetrResNetConfig",
        model="backbones_rt_detr_resnet._model:RTDetrResNetBackbone",
        description="ResNet-vd of RT-DETR (DETRs Beat YOLOs on Real-time Object Detection, 2023)",
        # RT-DETR checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="RTDetrImageProcessor",
    )
