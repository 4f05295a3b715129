"""Entry point of backbones-vitpose-backbone: registers the model type lazily (imports neither torch nor the
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
        "vitpose_backbone",
        config="backbones_vitpose_backbone._config:VitPoseBackboneConfig",
        model="backbones_vitpose_backbone._model:VitPoseBackbone",
        description="ViTPose (ViTPose: Simple Vision Transformer Baselines for Human Pose Estimation, 2022)",
        # The usyd-community/vitpose-* checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="VitPoseImageProcessor",
        image_processor_classes={
            "VitPoseImageProcessor": "backbones_vitpose_backbone._processing:VitPoseImageProcessor"
        },
    )
