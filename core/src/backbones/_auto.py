"""`AutoBackbone` and `AutoBackboneConfig`: dispatch on ``model_type`` through the registry."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from ._config import CONFIG_NAME, BackboneConfig, config_from_file
from ._errors import ConfigError
from ._files import read_json
from ._options import LoadOptions, check_config_overrides
from ._registry import get_registry

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from ._backbone import Backbone
    from ._loading import LoadReport

__all__ = ["AutoBackbone", "AutoBackboneConfig"]


def _config_class(model_type: str) -> type[BackboneConfig]:
    return get_registry().get(model_type).load_config_class()


def checkpoint_config_data(path: Path, options: LoadOptions) -> dict[str, Any]:
    """The backbone config a checkpoint's ``config.json`` holds: all of it, or its ``options.config_key`` object.

    Raises:
        ConfigError: ``options.config_key`` names no object of it.
    """
    data = read_json(path)
    if options.config_key is not None:
        nested = data.get(options.config_key)
        if not isinstance(nested, dict):
            raise ConfigError(f"{path} has no {options.config_key!r} object to read the backbone config from")
        data = nested
    return data


def config_with_overrides(
    config_class: type[BackboneConfig],
    data: dict[str, Any],
    path: Path,
    options: LoadOptions,
    overrides: Mapping[str, Any],
) -> BackboneConfig:
    """The config ``data`` describes, with ``overrides`` and the options' stage selection applied."""
    check_config_overrides(overrides, accepted={*config_class.model_fields, *data})
    return config_from_file(config_class, data, path, **{**overrides, **options.selection()})


class AutoBackboneConfig:
    """Build the right :class:`BackboneConfig` subclass from a ``model_type``."""

    def __init__(self) -> None:
        raise TypeError("AutoBackboneConfig is not instantiated; use AutoBackboneConfig.for_model or .from_pretrained")

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> BackboneConfig:
        """Return a config of ``model_type`` with ``kwargs`` set.

        Raises:
            UnknownModelTypeError: No installed plugin provides ``model_type``.
        """
        return _config_class(model_type)(**kwargs)

    @staticmethod
    def from_dict(data: dict[str, Any], **overrides: Any) -> BackboneConfig:
        """Return the config described by a ``config.json`` dictionary (it must hold ``model_type``)."""
        if not isinstance(data, dict):
            raise ConfigError(f"a backbone config must be a dict with a 'model_type', got {type(data).__name__}")
        model_type = data.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            raise ConfigError(f"the config has no 'model_type', so the architecture is unknown (keys: {sorted(data)})")
        return _config_class(model_type).from_dict(data, **overrides)

    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str], *, load_options: LoadOptions | None = None, **kwargs: Any
    ) -> BackboneConfig:
        """Read ``config.json`` from a directory or hub id and return the matching config.

        Args:
            name_or_path: Local directory or hub repository id.
            load_options: The hub options and ``config_key``, ``out_indices``, ``out_features`` are used
                (see :class:`backbones.LoadOptions`); the options about weights have nothing to do here.
            **kwargs: Any of those options by name, and config-field overrides.
        """
        from ._hub import resolve_file

        options, overrides = LoadOptions.split(kwargs, base=load_options)
        path = resolve_file(name_or_path, CONFIG_NAME, **options.hub_kwargs())
        assert path is not None  # only optional look-ups return None
        data = checkpoint_config_data(path, options)
        model_type = data.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            raise ConfigError(f"{path} has no 'model_type', so the architecture is unknown; add \"model_type\"")
        return config_with_overrides(_config_class(model_type), data, path, options, overrides)


class AutoBackbone:
    """Build or load the right backbone for a config or checkpoint."""

    def __init__(self) -> None:
        raise TypeError("AutoBackbone is not instantiated; use AutoBackbone.from_config or .from_pretrained")

    @staticmethod
    def from_config(
        config: BackboneConfig | dict[str, Any], *, max_parameters: int | None = None, **kwargs: Any
    ) -> Backbone:
        """Build a randomly initialised backbone.

        Args:
            config: A :class:`BackboneConfig` (or a ``config.json`` dict with ``model_type``).
            max_parameters: Refuse a model with more parameters (counted on the meta device before
                anything is allocated; default ``BACKBONES_MAX_PARAMETERS``, else 20 billion).
            **kwargs: Field overrides applied to a copy of the config (e.g. ``out_indices=[1, 2]``).
        """
        if isinstance(config, dict):
            config = AutoBackboneConfig.from_dict(config, **kwargs)
        elif not isinstance(config, BackboneConfig):
            raise TypeError(f"config must be a BackboneConfig or a dict, got {type(config).__name__}")
        elif kwargs:
            config = type(config).from_dict(config.to_dict(), **kwargs)
        model_class = get_registry().get(config.model_type).load_model_class()
        from ._loading import build_backbone  # counts the parameters first, and reports unknown fields

        return build_backbone(model_class, config, max_parameters=max_parameters)

    @overload
    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str],
        *,
        load_options: LoadOptions | None = None,
        out_indices: list[int] | tuple[int, ...] | None = None,
        out_features: list[str] | tuple[str, ...] | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        force_download: bool = False,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        strict: bool = False,
        allow_pickle: bool = False,
        checkpoint_prefix: str = "",
        config_key: str | None = None,
        output_loading_info: Literal[False] = False,
        use_timm_backbone: bool = False,
        max_parameters: int | None = None,
        **config_overrides: Any,
    ) -> Backbone: ...

    @overload
    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str],
        *,
        load_options: LoadOptions | None = None,
        out_indices: list[int] | tuple[int, ...] | None = None,
        out_features: list[str] | tuple[str, ...] | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        force_download: bool = False,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        strict: bool = False,
        allow_pickle: bool = False,
        checkpoint_prefix: str = "",
        config_key: str | None = None,
        output_loading_info: Literal[True],
        use_timm_backbone: bool = False,
        max_parameters: int | None = None,
        **config_overrides: Any,
    ) -> tuple[Backbone, LoadReport]: ...

    # The overloads spell out the fields of LoadOptions for type checkers and editors (a test keeps them
    # in step); the implementation takes them as keywords and builds one LoadOptions.
    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str], *, load_options: LoadOptions | None = None, **kwargs: Any
    ) -> Backbone | tuple[Backbone, LoadReport]:
        """Load a checkpoint (backbone or task checkpoint) saved by transformers or by backbones.

        Every keyword argument that is a field of :class:`backbones.LoadOptions` (``out_indices``,
        ``out_features``, ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``,
        ``dtype``, ``device``, ``strict``, ``allow_pickle``, ``checkpoint_prefix``, ``config_key``,
        ``output_loading_info``, ``use_timm_backbone``) is a load option, documented there. Every other one
        overrides a config field, or sets an extra config attribute, as transformers does; one that looks
        like a misspelt option (``revison=``, ``torch_dtype=``) is an error.

        Args:
            name_or_path: Local directory (relative or absolute) or hub repository id. A local
                directory, or a hub id whose files are cached, makes no network call. A name that is
                neither (``"resnet50"``) is offered to the plugins (``backbones-timm`` loads timm names).
            load_options: Options to start from; keyword options replace its fields.
            **kwargs: Load options by name, and config-field overrides.

        Returns:
            The backbone in eval mode, or ``(backbone, report)`` with ``output_loading_info=True``.

        Raises:
            TypeError: A keyword looks like a misspelt load option; the message names the valid ones.
        """
        from ._loading import load_pretrained

        options, config_overrides = LoadOptions.split(kwargs, base=load_options)
        return load_pretrained(name_or_path, options, config_overrides)
