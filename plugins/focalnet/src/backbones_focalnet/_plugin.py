"""Entry point of backbones-focalnet: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "focalnet",
        config="backbones_focalnet._config:FocalNetConfig",
        model="backbones_focalnet._model:FocalNetBackbone",
        description="FocalNet (Focal Modulation Networks, 2022)",
    )
