"""Entry point of backbones-timm: registers the model type lazily (imports neither torch, timm nor the model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backbones import hookimpl

if TYPE_CHECKING:
    from collections.abc import Mapping

    from backbones import LoadOptions
    from backbones.hookspecs import Register

# The plugin API this plugin was built for; core loads it only if it fits (see backbones.PLUGIN_API_VERSION).
# 1.1: load_backbone_from_name takes load_options and config_overrides.
BACKBONES_PLUGIN_API = "1.1"


@hookimpl
def register_backbones(register: Register) -> None:
    register(
        "timm_backbone",
        config="backbones_timm._config:TimmBackboneConfig",
        model="backbones_timm._model:TimmBackbone",
        description="any timm model with feature_info, wrapped as transformers' TimmBackbone",
    )


@hookimpl
def load_backbone_from_name(name: str, load_options: LoadOptions, config_overrides: Mapping[str, Any]) -> Any:
    # Imported here: timm and torch load only when a name actually has to be resolved.
    from ._pretrained import load_by_name

    return load_by_name(name, load_options, config_overrides)
