"""Entry point of backbones-dinov3-vit: registers the model type lazily (imports neither torch nor the model)."""

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
        "dinov3_vit",
        config="backbones_dinov3_vit._config:Dinov3ViTConfig",
        model="backbones_dinov3_vit._model:Dinov3ViTBackbone",
        description="DINOv3 ViT (self-supervised vision transformer with 2-D rotary positions, 2025)",
        # DINOv3 checkpoints' preprocessor_config.json names it (a core family); also used when one names none.
        image_processor="DINOv3ViTImageProcessor",
    )
