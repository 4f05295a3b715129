"""Loading a backbone from a timm model *name* (``"resnet50"``, ``"hf-hub:..."``, ``"local-dir:..."``).

A checkpoint directory or hub repository with a ``config.json`` goes through core's loader; a timm name has
no ``config.json``, so the backbone is built from a :class:`TimmBackboneConfig` and timm loads its weights,
as transformers' ``AutoBackbone.from_pretrained("resnet50", use_timm_backbone=True)`` does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from backbones import LoadOptions, LoadReport

__all__ = ["TIMM_SOURCES", "is_timm_model_name", "load_by_name", "load_timm_pretrained"]

TIMM_SOURCES = ("hf-hub:", "local-dir:")
"""Prefixes with which timm names a model held on the hub or in a local folder."""


def is_timm_model_name(name_or_path: str | os.PathLike[str], *, strict: bool = True) -> bool:
    """Whether ``name_or_path`` names a timm model rather than a checkpoint directory or hub repository.

    Args:
        name_or_path: What was passed to ``from_pretrained``.
        strict: Also require a plain name to be in timm's registry (imports timm). With ``strict=False``
            any plain name (no path separator) counts, so that a misspelt one gets timm's close matches.
    """
    if not isinstance(name_or_path, str):
        return False
    if name_or_path.startswith(TIMM_SOURCES):
        return True
    if (
        not name_or_path
        or os.path.isdir(name_or_path)
        or any(character in name_or_path for character in "/\\:")
        or name_or_path.startswith(("~", "."))
    ):
        return False
    if not strict:
        return True
    import timm
    from timm.models import split_model_name_tag

    return timm.is_model(split_model_name_tag(name_or_path)[0])


def _unsupported(option: str, value: Any, fix: str) -> ValueError:
    return ValueError(f"{option}={value!r} is not supported when loading a timm model by name; {fix}")


def load_timm_pretrained(name: str, *, load_options: LoadOptions | None = None, **kwargs: Any) -> Any:
    """Build a timm backbone with timm's pretrained weights for ``name``.

    Accepts the arguments of :meth:`backbones.AutoBackbone.from_pretrained`: load options (see
    :class:`backbones.LoadOptions`) and config overrides, which here are :class:`TimmBackboneConfig` fields
    and timm arguments (``num_channels``, ``output_stride``, ``drop_path_rate``, ...). ``strict`` and
    ``allow_pickle`` have nothing to decide here (timm loads its weights strictly, ``.pth`` files with
    ``weights_only=True``); the hub options timm cannot honour raise an error saying what to do instead,
    and ``cache_dir`` is where timm caches the weights it downloads.

    Args:
        name: A timm name: ``"resnet50"``, ``"resnet50.a1_in1k"``, ``"hf-hub:timm/resnet50.a1_in1k"`` or
            ``"local-dir:/path/to/folder"`` (a folder holding timm's ``config.json`` and weights).
        load_options: Options to start from; keyword options replace its fields.
        **kwargs: Load options by name, and config overrides.

    Returns:
        The backbone in eval mode, or ``(backbone, report)`` with ``output_loading_info=True``.

    Raises:
        ConfigError: ``name`` is not a timm model (the message lists close matches).
        CheckpointError: The weights cannot be reached; the message names the model and the source.
        TypeError: A keyword looks like a misspelt load option.
    """
    from ._config import TimmBackboneConfig

    options, config_overrides = LoadOptions.split(kwargs, base=load_options)
    # Here, unlike in core before it calls the hook, the config's fields are known.
    LoadOptions.check_config_overrides(config_overrides, accepted=TimmBackboneConfig.model_fields)
    return _load(name, options, config_overrides)


def _load(name: str, options: LoadOptions, config_overrides: Mapping[str, Any]) -> Any:
    import torch

    from ._config import TimmBackboneConfig
    from ._model import TimmBackbone

    if options.revision is not None:
        raise _unsupported(
            "revision", options.revision, f"name the revision in the model id: 'hf-hub:<org>/<name>@{options.revision}'"
        )
    if options.local_files_only:
        raise _unsupported("local_files_only", True, "set the environment variable HF_HUB_OFFLINE=1 instead")
    if options.token not in (None, False):
        raise _unsupported("token", "...", "log in with `hf auth login` or set the HF_TOKEN environment variable")
    if options.force_download:
        raise _unsupported("force_download", True, "delete the cached weights instead")
    if options.checkpoint_prefix or options.config_key is not None:
        raise _unsupported(
            "checkpoint_prefix" if options.checkpoint_prefix else "config_key",
            options.checkpoint_prefix or options.config_key,
            "they select part of a checkpoint, and a timm name is not one",
        )
    overrides = dict(config_overrides)
    # As in transformers, from_pretrained always loads the weights.
    overrides.pop("use_pretrained_backbone", None)
    if options.cache_dir is not None:
        overrides["cache_dir"] = os.fspath(options.cache_dir)
    config = TimmBackboneConfig(backbone=name, use_pretrained_backbone=True, **options.selection(), **overrides)
    # Counted on the meta device first, as every load is: a model over max_parameters is refused before any
    # weight is allocated or downloaded.
    model = TimmBackbone.from_config(config, max_parameters=options.max_parameters)
    dtype = options.dtype
    if dtype == "auto":
        target = None
    elif dtype is None:
        target = torch.get_default_dtype()
    elif isinstance(dtype, torch.dtype):
        target = dtype
    else:
        target = getattr(torch, str(dtype).replace("torch.", ""), None)
        if not isinstance(target, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype; use e.g. torch.float32, 'bfloat16' or 'auto'")
    model.to(device=torch.device(options.device) if options.device is not None else None, dtype=target)
    model.eval()
    if options.output_loading_info:
        return model, LoadReport(source=name)
    return model


def load_by_name(name: str, options: LoadOptions, config_overrides: Mapping[str, Any] | None = None) -> Any:
    """Load ``name`` if it is a timm model name, else return None (for core's ``load_backbone_from_name`` hook).

    Meant to be called after core found no ``config.json`` for ``name``: a name timm knows (or a
    ``hf-hub:`` / ``local-dir:`` one) is loaded with timm's weights; anything else is left to core's error.

    Args:
        name: What was passed to ``AutoBackbone.from_pretrained``.
        options: Its load options.
        config_overrides: Its other keyword arguments: :class:`TimmBackboneConfig` fields and timm arguments.
    """
    if not is_timm_model_name(name):
        return None
    return _load(name, options, config_overrides or {})
