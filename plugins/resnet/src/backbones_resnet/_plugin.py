"""Entry point of backbones-resnet: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "resnet",
        config="backbones_resnet._config:ResNetConfig",
        model="backbones_resnet._model:ResNetBackbone",
        description="ResNet (Deep Residual Learning for Image Recognition, 2015)",
    )
