"""Entry point of backbones-maskformer-swin: registers the model type lazily (imports neither torch nor the model)."""

from __future__ import annotations

from backbones import hookimpl


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "maskformer-swin",
        config="backbones_maskformer_swin._config:MaskFormerSwinConfig",
        model="backbones_maskformer_swin._model:MaskFormerSwinBackbone",
        description="Swin Transformer as MaskFormer's pixel-level encoder (per-stage output norms, 2021)",
    )
