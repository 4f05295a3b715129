"""Entry point of backbones-NAME: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "NAME",
        config="backbones_NAME._config:NAMEConfig",
        model="backbones_NAME._model:NAMEBackbone",
        description="NAME (paper title, year)",
    )
