"""Entry point of backbones-vitdet: registers the model type lazily (imports neither torch nor the model)."""

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
        "vitdet",
        config="backbones_vitdet._config:VitDetConfig",
        model="backbones_vitdet._model:VitDetBackbone",
        description="ViTDet (plain vision transformer backbone for object detection, 2022)",
    )
