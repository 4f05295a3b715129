"""`load_backbone`: build the backbone a head model's config describes (MaskFormer, DETR, UperNet, ...).

The head config may be a transformers config object, any object with the attributes below, or a dict:

* ``backbone_config``: a :class:`BackboneConfig`, a dict with ``model_type``, or a transformers
  config (anything with ``to_dict()``) -> a randomly initialised backbone of that config;
* ``backbone``: a hub id or directory, with ``use_pretrained_backbone=True`` -> its weights are loaded;
  with ``use_pretrained_backbone`` false only its config is read;
* ``backbone_kwargs``: for the ``backbone`` path, load options (:class:`backbones.LoadOptions` fields, e.g.
  ``{"out_indices": [1, 2, 3], "revision": "v2"}``) and config overrides, as ``from_pretrained`` takes
  them; with ``use_timm_backbone`` they are ``TimmBackboneConfig`` fields and timm arguments;
* ``use_timm_backbone=True`` with ``backbone`` a timm model name -> the ``backbones-timm`` plugin.

A config with none of these is taken to be a backbone config itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import BackboneConfig
from ._errors import ConfigError
from ._options import LoadOptions

if TYPE_CHECKING:
    from ._backbone import Backbone

__all__ = ["load_backbone"]


def _get(config: Any, name: str) -> Any:
    if isinstance(config, dict):
        return config.get(name)
    return getattr(config, name, None)


def _as_backbone_config(value: Any, **overrides: Any) -> BackboneConfig:
    from ._auto import AutoBackboneConfig

    if isinstance(value, BackboneConfig):
        return type(value).from_dict(value.to_dict(), **overrides) if overrides else value
    if isinstance(value, dict):
        return AutoBackboneConfig.from_dict(value, **overrides)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):  # a transformers config object, or similar
        data = to_dict()
        data.setdefault("model_type", getattr(value, "model_type", None))
        return AutoBackboneConfig.from_dict(data, **overrides)
    raise ConfigError(
        f"backbone_config must be a BackboneConfig, a dict with 'model_type', or a config object with to_dict(); "
        f"got {type(value).__name__}"
    )


def load_backbone(config: Any) -> Backbone:
    """Return the backbone described by a head model's config (see the module docstring).

    Raises:
        ConfigError: When the fields contradict each other or a required one is missing.
        UnknownModelTypeError: When the backbone's model type has no installed plugin.
        TypeError: A key of ``backbone_kwargs`` looks like a misspelt load option.
    """
    from ._auto import AutoBackbone, AutoBackboneConfig

    backbone_config = _get(config, "backbone_config")
    checkpoint = _get(config, "backbone")
    use_pretrained = _get(config, "use_pretrained_backbone")
    use_timm = _get(config, "use_timm_backbone")
    backbone_kwargs = _get(config, "backbone_kwargs") or {}
    if not isinstance(backbone_kwargs, dict):
        raise ConfigError(f"backbone_kwargs must be a dict, got {type(backbone_kwargs).__name__}")

    if backbone_kwargs and backbone_config is not None:
        raise ConfigError(
            "both backbone_kwargs and backbone_config are set; put the options into backbone_config instead"
        )
    if backbone_config is not None and checkpoint is not None and use_pretrained:
        raise ConfigError(
            "both backbone_config and backbone (a checkpoint to load) are set; keep backbone_config for a "
            "randomly initialised backbone, or backbone with use_pretrained_backbone=True to load weights"
        )
    if backbone_config is None and checkpoint is None and use_timm is None:
        return AutoBackbone.from_config(_as_backbone_config(config))

    if use_timm:
        if checkpoint is None:
            raise ConfigError("use_timm_backbone=True needs backbone set to a timm model name (e.g. 'resnet50')")
        timm_config = AutoBackboneConfig.for_model(
            "timm_backbone",
            backbone=checkpoint,
            use_pretrained_backbone=bool(use_pretrained),
            **backbone_kwargs,
        )
        return AutoBackbone.from_config(timm_config)
    options, overrides = LoadOptions.split(backbone_kwargs)
    if options.output_loading_info:
        raise ConfigError(
            "backbone_kwargs cannot set output_loading_info: load_backbone returns the backbone alone; "
            "call AutoBackbone.from_pretrained(backbone, output_loading_info=True) for the report"
        )
    if use_pretrained:
        if checkpoint is None:
            raise ConfigError("use_pretrained_backbone=True needs backbone set to a hub id or a directory")
        model = AutoBackbone.from_pretrained(checkpoint, load_options=options, **overrides)
        assert not isinstance(model, tuple)
        return model
    if backbone_config is None:
        if checkpoint is None:
            raise ConfigError("set backbone_config, or backbone (a hub id or directory)")
        backbone_config = AutoBackboneConfig.from_pretrained(checkpoint, load_options=options, **overrides)
    return AutoBackbone.from_config(_as_backbone_config(backbone_config))
