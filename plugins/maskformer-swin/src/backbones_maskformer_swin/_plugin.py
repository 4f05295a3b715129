"""Entry point of backbones-maskformer-swin: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones import hookimpl

if TYPE_CHECKING:
    from backbones.hookspecs import Register

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "maskformer-swin",
        config="backbones_maskformer_swin._config:MaskFormerSwinConfig",
        model="backbones_maskformer_swin._model:MaskFormerSwinBackbone",
        description="Swin Transformer as MaskFormer's pixel-level encoder (per-stage output norms, 2021)",
    )
