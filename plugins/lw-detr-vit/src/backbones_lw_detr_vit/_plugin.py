"""Entry point of backbones-lw-detr-vit: registers the model type lazily (imports neither torch nor the model)."""

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
        "lw_detr_vit",
        config="backbones_lw_detr_vit._config:LwDetrViTConfig",
        model="backbones_lw_detr_vit._model:LwDetrViTBackbone",
        description="ViT of LW-DETR (windowed and global attention, A Transformer Replacement to YOLO, 2024)",
        # LW-DETR checkpoints' preprocessor_config.json names it (a family of core's); also used when one
        # names none.
        image_processor="DeformableDetrImageProcessor",
    )
