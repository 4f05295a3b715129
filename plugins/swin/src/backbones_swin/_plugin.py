"""Entry point of backbones-swin: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "swin",
        config="backbones_swin._config:SwinConfig",
        model="backbones_swin._model:SwinBackbone",
        description="Swin Transformer (hierarchical vision transformer using shifted windows, 2021)",
    )
