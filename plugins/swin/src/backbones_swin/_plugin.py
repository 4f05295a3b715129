"""Entry point of backbones-swin: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "swin",
        config="backbones_swin._config:SwinConfig",
        model="backbones_swin._model:SwinBackbone",
        description="Swin Transformer (hierarchical vision transformer using shifted windows, 2021)",
    )
