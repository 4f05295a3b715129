"""Entry point of backbones-tipsv2: registers the model types lazily (imports neither torch nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backbones import hookimpl

if TYPE_CHECKING:
    from backbones.hookspecs import Register

# The plugin API this plugin was built for (1.1: it declares its own image processor); core loads it only if
# it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.1"


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "tipsv2_vision_model",
        config="backbones_tipsv2._config:Tipsv2VisionConfig",
        model="backbones_tipsv2._model:Tipsv2VisionBackbone",
        # A full image-text checkpoint's config.json says "tipsv2" and nests the vision config, which
        # Tipsv2VisionConfig.from_dict reads (as transformers maps both types to Tipsv2VisionBackbone).
        aliases=("tipsv2",),
        description="TIPSv2 vision encoder (image-text pre-training with spatial awareness, Google 2025)",
        # The google/tipsv2-* checkpoints' preprocessor_config.json names it; also used when one names none.
        image_processor="Tipsv2ImageProcessor",
        image_processor_classes={"Tipsv2ImageProcessor": "backbones_tipsv2._processing:Tipsv2ImageProcessor"},
    )
