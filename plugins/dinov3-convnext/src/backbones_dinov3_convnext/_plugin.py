"""Entry point of backbones-dinov3-convnext: registers the model type lazily (imports neither torch nor the model)."""

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
        "dinov3_convnext",
        config="backbones_dinov3_convnext._config:DINOv3ConvNextConfig",
        model="backbones_dinov3_convnext._model:DINOv3ConvNextBackbone",
        description="DINOv3 ConvNeXt (ConvNeXt distilled from the self-supervised DINOv3 ViT-7B, 2025)",
        # DINOv3 checkpoints' preprocessor_config.json names it (a core family, the ViT's too); also used when
        # one names none.
        image_processor="DINOv3ViTImageProcessor",
    )
