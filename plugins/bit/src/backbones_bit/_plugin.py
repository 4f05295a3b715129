"""Entry point of backbones-bit: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "bit",
        config="backbones_bit._config:BitConfig",
        model="backbones_bit._model:BitBackbone",
        description="BiT, Big Transfer ResNetV2 (Big Transfer (BiT): General Visual Representation Learning, 2019)",
    )
