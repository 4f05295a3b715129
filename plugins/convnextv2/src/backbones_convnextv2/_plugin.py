"""Entry point of backbones-convnextv2: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "convnextv2",
        config="backbones_convnextv2._config:ConvNextV2Config",
        model="backbones_convnextv2._model:ConvNextV2Backbone",
        description="ConvNeXt V2 (Co-designing and Scaling ConvNets with Masked Autoencoders, 2023)",
    )
