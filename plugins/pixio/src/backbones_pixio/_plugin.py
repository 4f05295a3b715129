"""Entry point of backbones-pixio: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for (1.1: it declares its image processor); core loads it only if it
# fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "pixio",
        config="backbones_pixio._config:PixioConfig",
        model="backbones_pixio._model:PixioBackbone",
        description="Pixio (masked-autoencoder ViT with several class tokens, Meta 2025)",
        # transformers' image processor of the model type (its auto mapping), also used when a
        # preprocessor_config.json names none.
        image_processor="BitImageProcessor",
    )
