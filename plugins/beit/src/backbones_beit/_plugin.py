"""Entry point of backbones-beit: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "beit",
        config="backbones_beit._config:BeitConfig",
        model="backbones_beit._model:BeitBackbone",
        description="BEiT (BERT pre-training of image transformers, 2021): a plain ViT read out layer by layer",
    )
