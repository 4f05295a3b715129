"""Entry point of backbones-convnext: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "convnext",
        config="backbones_convnext._config:ConvNextConfig",
        model="backbones_convnext._model:ConvNextBackbone",
        description="ConvNeXt (A ConvNet for the 2020s, 2022)",
    )
