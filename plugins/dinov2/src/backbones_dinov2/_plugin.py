"""Entry point of backbones-dinov2: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "dinov2",
        config="backbones_dinov2._config:Dinov2Config",
        model="backbones_dinov2._model:Dinov2Backbone",
        description="DINOv2 (self-supervised plain vision transformer, 2023)",
    )
