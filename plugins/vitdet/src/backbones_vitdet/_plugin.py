"""Entry point of backbones-vitdet: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "vitdet",
        config="backbones_vitdet._config:VitDetConfig",
        model="backbones_vitdet._model:VitDetBackbone",
        description="ViTDet (plain vision transformer backbone for object detection, 2022)",
    )
