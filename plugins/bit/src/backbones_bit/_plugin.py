"""Entry point of backbones-bit: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "bit",
        config="backbones_bit._config:BitConfig",
        model="backbones_bit._model:BitBackbone",
        description="BiT, Big Transfer ResNetV2 (Big Transfer (BiT): General Visual Representation Learning, 2019)",
    )
