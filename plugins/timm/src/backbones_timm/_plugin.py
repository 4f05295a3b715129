"""Entry point of backbones-timm: registers the model type lazily (imports neither torch, timm nor the model)."""

from __future__ import annotations

from backbones import hookimpl

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
BACKBONES_PLUGIN_API = "1.0"


@hookimpl
def register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "timm_backbone",
        config="backbones_timm._config:TimmBackboneConfig",
        model="backbones_timm._model:TimmBackbone",
        description="any timm model with feature_info, wrapped as transformers' TimmBackbone",
    )


@hookimpl
def load_backbone_from_name(name, options):  # type: ignore[no-untyped-def]
    # Imported here: timm and torch load only when a name actually has to be resolved.
    from ._pretrained import load_by_name

    return load_by_name(name, options)
