"""Entry point of backbones-dinat: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "dinat",
        config="backbones_dinat._config:DinatConfig",
        model="backbones_dinat._model:DinatBackbone",
        description="Dilated Neighborhood Attention Transformer (local and sparse global attention, 2022)",
    )
