"""Entry point of backbones-beit: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "beit",
        config="backbones_beit._config:BeitConfig",
        model="backbones_beit._model:BeitBackbone",
        description="BEiT (BERT pre-training of image transformers, 2021): a plain ViT read out layer by layer",
    )
