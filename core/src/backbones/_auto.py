"""`AutoBackbone` and `AutoBackboneConfig`: dispatch on ``model_type`` through the registry."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal, overload

from ._config import CONFIG_NAME, BackboneConfig, config_from_file
from ._errors import ConfigError
from ._files import read_json
from ._registry import get_registry

if TYPE_CHECKING:
    from ._backbone import Backbone
    from ._loading import LoadReport

__all__ = ["AutoBackbone", "AutoBackboneConfig"]


def _config_class(model_type: str) -> type[BackboneConfig]:
    return get_registry().get(model_type).load_config_class()


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
    def from_pretrained(name_or_path: str | os.PathLike[str], **kwargs: Any) -> BackboneConfig:
        """Read ``config.json`` from a directory or hub id and return the matching config.

        Args:
            name_or_path: Local directory or hub repository id.
            **kwargs: Hub options (``revision``, ``cache_dir``, ``local_files_only``, ``token``,
                ``force_download``) and field overrides.
        """
        from ._hub import HUB_OPTIONS, resolve_file

        hub = {key: kwargs.pop(key) for key in list(kwargs) if key in HUB_OPTIONS}
        path = resolve_file(name_or_path, CONFIG_NAME, **hub)
        assert path is not None
        data = read_json(path)
        model_type = data.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            raise ConfigError(f"{path} has no 'model_type', so the architecture is unknown; add \"model_type\"")
        return config_from_file(_config_class(model_type), data, path, **kwargs)


class AutoBackbone:
    """Build or load the right backbone for a config or checkpoint."""

    def __init__(self) -> None:
        raise TypeError("AutoBackbone is not instantiated; use AutoBackbone.from_config or .from_pretrained")

    @staticmethod
    def from_config(config: BackboneConfig | dict[str, Any], **kwargs: Any) -> Backbone:
        """Build a randomly initialised backbone.

        Args:
            config: A :class:`BackboneConfig` (or a ``config.json`` dict with ``model_type``).
            **kwargs: Field overrides applied to a copy of the config (e.g. ``out_indices=[1, 2]``).
        """
        if isinstance(config, dict):
            config = AutoBackboneConfig.from_dict(config, **kwargs)
        elif not isinstance(config, BackboneConfig):
            raise TypeError(f"config must be a BackboneConfig or a dict, got {type(config).__name__}")
        elif kwargs:
            config = type(config).from_dict(config.to_dict(), **kwargs)
        model_class = get_registry().get(config.model_type).load_model_class()
        return model_class(config)

    @overload
    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str],
        *,
        out_indices: list[int] | tuple[int, ...] | None = None,
        out_features: list[str] | tuple[str, ...] | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        dtype: Any = None,
        device: Any = None,
        strict: bool = False,
        allow_pickle: bool = False,
        output_loading_info: Literal[False] = False,
        **config_overrides: Any,
    ) -> Backbone: ...

    @overload
    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str],
        *,
        out_indices: list[int] | tuple[int, ...] | None = None,
        out_features: list[str] | tuple[str, ...] | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        dtype: Any = None,
        device: Any = None,
        strict: bool = False,
        allow_pickle: bool = False,
        output_loading_info: Literal[True],
        **config_overrides: Any,
    ) -> tuple[Backbone, LoadReport]: ...

    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike[str],
        *,
        out_indices: list[int] | tuple[int, ...] | None = None,
        out_features: list[str] | tuple[str, ...] | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        dtype: Any = None,
        device: Any = None,
        strict: bool = False,
        allow_pickle: bool = False,
        output_loading_info: bool = False,
        **config_overrides: Any,
    ) -> Backbone | tuple[Backbone, LoadReport]:
        """Load a checkpoint (backbone or task checkpoint) saved by transformers or by backbones.

        Args:
            name_or_path: Local directory (relative or absolute) or hub repository id. A local
                directory, or a hub id whose files are cached, makes no network call.
            out_indices: Stages to output (overrides the saved selection).
            out_features: Stage names to output (overrides the saved selection).
            revision: Hub branch, tag or commit.
            cache_dir: Hub cache directory.
            local_files_only: Never use the network.
            token: Hub token.
            dtype: Floating dtype of the parameters (default float32; ``"auto"`` keeps the checkpoint's).
            device: Device to load onto (default CPU).
            strict: Raise if any model key is missing from the checkpoint or any checkpoint key is unused.
            allow_pickle: Accept a ``pytorch_model.bin`` (loaded with ``torch.load(weights_only=True)``).
            output_loading_info: Return ``(model, LoadReport)`` instead of the model.
            **config_overrides: Config fields to override, plus ``force_download``, ``checkpoint_prefix``
                (load only checkpoint keys under this prefix, e.g. a backbone inside a head model) and
                ``config_key`` (read the backbone config from this key of ``config.json``).

        Returns:
            The backbone in eval mode, or ``(backbone, report)``.
        """
        from ._loading import load_pretrained

        return load_pretrained(
            name_or_path,
            out_indices=out_indices,
            out_features=out_features,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            dtype=dtype,
            device=device,
            strict=strict,
            allow_pickle=allow_pickle,
            output_loading_info=output_loading_info,
            **config_overrides,
        )
