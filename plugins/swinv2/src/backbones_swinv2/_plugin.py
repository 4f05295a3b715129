"""Entry point of backbones-swinv2: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "swinv2",
        config="backbones_swinv2._config:Swinv2Config",
        model="backbones_swinv2._model:Swinv2Backbone",
        description="Swin Transformer V2 (scaled cosine attention, continuous position bias, 2022)",
    )
