"""Entry point of backbones-dinov2-with-registers: registers the model type lazily (imports neither torch nor
the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for (1.1: it declares its image processor); core loads it only if it
# fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "dinov2_with_registers",
        config="backbones_dinov2_with_registers._config:Dinov2WithRegistersConfig",
        model="backbones_dinov2_with_registers._model:Dinov2WithRegistersBackbone",
        description="DINOv2 with registers (DINOv2 plus register tokens, 2023)",
        # The image_processor_type of its checkpoints, also used when their preprocessor_config.json names none.
        image_processor="BitImageProcessor",
    )
