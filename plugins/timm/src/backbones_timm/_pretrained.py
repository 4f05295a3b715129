"""Loading a backbone from a timm model *name* (``"resnet50"``, ``"hf-hub:..."``, ``"local-dir:..."``).

A checkpoint directory or hub repository with a ``config.json`` goes through core's loader; a timm name has
no ``config.json``, so the backbone is built from a :class:`TimmBackboneConfig` and timm loads its weights,
as transformers' ``AutoBackbone.from_pretrained("resnet50", use_timm_backbone=True)`` does.
"""

from __future__ import annotations

import os
from typing import Any

from backbones import LoadReport

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


def load_timm_pretrained(
    name: str,
    *,
    out_indices: list[int] | tuple[int, ...] | None = None,
    out_features: list[str] | tuple[str, ...] | None = None,
    dtype: Any = None,
    device: Any = None,
    output_loading_info: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    strict: bool = False,
    allow_pickle: bool = False,
    checkpoint_prefix: str = "",
    config_key: str | None = None,
    **config_overrides: Any,
) -> Any:
    """Build a timm backbone with timm's pretrained weights for ``name``.

    Accepts the arguments of :meth:`backbones.AutoBackbone.from_pretrained`. ``strict`` and
    ``allow_pickle`` have nothing to decide here (timm loads its weights strictly, ``.pth`` files with
    ``weights_only=True``); the hub options timm cannot honour raise an error saying what to do instead.

    Args:
        name: A timm name: ``"resnet50"``, ``"resnet50.a1_in1k"``, ``"hf-hub:timm/resnet50.a1_in1k"`` or
            ``"local-dir:/path/to/folder"`` (a folder holding timm's ``config.json`` and weights).
        out_indices: Stages to output.
        out_features: Stage names to output.
        dtype: Floating dtype of the parameters (default float32; ``"auto"`` keeps timm's).
        device: Device to move the backbone to (default CPU).
        output_loading_info: Return ``(model, LoadReport)`` instead of the model.
        cache_dir: Where timm caches downloaded weights (passed to ``timm.create_model``).
        **config_overrides: :class:`TimmBackboneConfig` fields and timm arguments (``num_channels``,
            ``output_stride``, ``drop_path_rate``, ...).

    Returns:
        The backbone in eval mode, or ``(backbone, report)``.

    Raises:
        ConfigError: ``name`` is not a timm model (the message lists close matches).
        CheckpointError: The weights cannot be reached; the message names the model and the source.
    """
    import torch

    from ._config import TimmBackboneConfig
    from ._model import TimmBackbone

    if revision is not None:
        raise _unsupported("revision", revision, f"name the revision in the model id: 'hf-hub:<org>/<name>@{revision}'")
    if local_files_only:
        raise _unsupported("local_files_only", True, "set the environment variable HF_HUB_OFFLINE=1 instead")
    if token not in (None, False):
        raise _unsupported("token", "...", "log in with `hf auth login` or set the HF_TOKEN environment variable")
    if force_download:
        raise _unsupported("force_download", True, "delete the cached weights instead")
    if checkpoint_prefix or config_key is not None:
        raise _unsupported(
            "checkpoint_prefix" if checkpoint_prefix else "config_key",
            checkpoint_prefix or config_key,
            "they select part of a checkpoint, and a timm name is not one",
        )
    # As in transformers, from_pretrained always loads the weights.
    config_overrides.pop("use_pretrained_backbone", None)
    config_overrides.pop("use_timm_backbone", None)
    if cache_dir is not None:
        config_overrides["cache_dir"] = os.fspath(cache_dir)
    selection: dict[str, Any] = {"out_indices": out_indices, "out_features": out_features}
    config = TimmBackboneConfig(backbone=name, use_pretrained_backbone=True, **selection, **config_overrides)
    model = TimmBackbone(config)
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
    model.to(device=torch.device(device) if device is not None else None, dtype=target)
    model.eval()
    if output_loading_info:
        return model, LoadReport(source=name)
    return model


def load_by_name(name: str, options: dict[str, Any]) -> Any:
    """Load ``name`` if it is a timm model name, else return None (for a name-resolving hook of core).

    Meant to be called after core found no ``config.json`` for ``name``: a name timm knows (or a
    ``hf-hub:`` / ``local-dir:`` one) is loaded with timm's weights; anything else is left to core's error.

    Args:
        name: What was passed to ``AutoBackbone.from_pretrained``.
        options: Its keyword arguments (see :func:`load_timm_pretrained`).
    """
    if not is_timm_model_name(name):
        return None
    return load_timm_pretrained(name, **options)
