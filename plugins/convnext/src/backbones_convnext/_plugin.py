"""Entry point of backbones-convnext: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "convnext",
        config="backbones_convnext._config:ConvNextConfig",
        model="backbones_convnext._model:ConvNextBackbone",
        description="ConvNeXt (A ConvNet for the 2020s, 2022)",
    )
