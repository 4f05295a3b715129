"""Everything that talks to timm: building models, reading their stages, naming weight sources, freezing norms.

Imported only when a timm backbone is configured or built (``import timm`` takes seconds).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import timm
import torch
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d, SyncBatchNormAct
from timm.layers.norm_act import FrozenBatchNorm2d
from timm.models import FeatureInfo, parse_model_name, resolve_pretrained_cfg, split_model_name_tag
from torch import nn

from backbones import CheckpointError, ConfigError

__all__ = [
    "FeatureSpec",
    "TimmModelRequest",
    "create_timm_model",
    "describe_features",
    "feature_dicts",
    "freeze_batch_norm_2d",
    "model_arguments",
    "weights_source",
]

CREATE_MODEL_ARGUMENTS = frozenset(
    {
        # timm.create_model's documented parameters and keyword arguments (timm 1.0), that any model takes.
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "cache_dir",
        "scriptable",
        "exportable",
        "no_jit",
        "drop_rate",
        "drop_path_rate",
        "global_pool",
    }
)
"""Config fields passed to ``timm.create_model`` whatever the model (see :func:`model_arguments`)."""


@dataclass(frozen=True)
class FeatureSpec:
    """The stages of a timm model, from its ``feature_info``."""

    names: tuple[str, ...]
    channels: tuple[int, ...]
    reductions: tuple[int, ...]


def feature_dicts(model: nn.Module) -> list[dict[str, Any]] | None:
    """The model's ``feature_info`` entries (every stage, whatever its out_indices), or None if it has none."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, FeatureInfo):
        return list(info.info)
    if isinstance(info, (list, tuple)) and all(isinstance(entry, dict) for entry in info):
        return list(info)
    return None


def _unknown_model(name: str) -> ConfigError:
    architecture, _ = split_model_name_tag(name)
    close = difflib.get_close_matches(architecture, timm.list_models(), n=6, cutoff=0.6)
    hint = (
        f"close matches: {', '.join(close)}"
        if close
        else f"no close match; list names with timm.list_models('{architecture[:4]}*')"
    )
    return ConfigError(f"{name!r} is not a timm model name ({hint})")


def _check_name(backbone: str) -> None:
    """Reject a registry name timm does not know, before building anything."""
    try:
        source, model_id = parse_model_name(backbone)
    except ValueError as error:  # e.g. "org/name" without "hf-hub:"
        raise ConfigError(f"backbone={backbone!r}: {error}") from None
    if source is None and not timm.is_model(model_id):
        raise _unknown_model(backbone)


@dataclass(frozen=True)
class TimmModelRequest:
    """A timm model to build: its name and the arguments of ``timm.create_model`` that a config sets.

    Attributes:
        backbone: timm's name of the model (``hf-hub:`` and ``local-dir:`` names included).
        features_only: Build timm's feature extractor (every stage) rather than the whole model.
        num_channels: Input channels (timm's ``in_chans``).
        output_stride: timm's ``output_stride`` (dilation past it); ``None``: the model's own.
        kwargs: Further keyword arguments of ``timm.create_model``.
        num_stages: The model's number of stages, all of which the feature extractor returns; ``None``: not
            known yet (the feature extractor then returns the last stage only, which is valid for every model).
    """

    backbone: str
    features_only: bool
    num_channels: int
    output_stride: int | None
    kwargs: dict[str, Any]
    num_stages: int | None

    def build(self, *, pretrained: bool, on_meta: bool) -> nn.Module:
        """``timm.create_model`` of the request, with or without timm's pretrained weights, on the meta device or not."""
        arguments = dict(self.kwargs)
        if self.features_only:
            # Every stage is built (so any selection works later); the probe asks for the last one only,
            # which is valid for every model, to learn how many there are.
            arguments["features_only"] = True
            arguments["out_indices"] = tuple(range(self.num_stages)) if self.num_stages is not None else (-1,)
        device = torch.device("meta") if on_meta else contextlib.nullcontext()
        with device:
            return timm.create_model(
                self.backbone,
                pretrained=pretrained,
                in_chans=self.num_channels,
                output_stride=self.output_stride,
                **arguments,
            )


def _hub_or_folder_error(backbone: str, error: Exception) -> CheckpointError:
    source, model_id = parse_model_name(backbone)
    where = f"the Hugging Face hub repository {model_id!r}" if source == "hf-hub" else f"the folder {model_id}"
    return CheckpointError(
        f"cannot read the timm config of {backbone!r} from {where}: {type(error).__name__}: {error}"
        + _offline_hint(source == "hf-hub")
    )


def _offline_hint(from_hub: bool) -> str:
    if not from_hub:
        return ""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return " (HF_HUB_OFFLINE is set and it is not in the cache: fetch it once with network access)"
    return ""


@lru_cache(maxsize=256)
def model_arguments(backbone: str) -> frozenset[str]:
    """The keyword arguments ``timm.create_model(backbone, ...)`` documents for this model. Cached.

    They are :data:`CREATE_MODEL_ARGUMENTS` and the parameters of the model class's ``__init__`` (timm
    documents each model's arguments there), read from a build on the meta device. A model that cannot
    be built without arguments gets :data:`CREATE_MODEL_ARGUMENTS` only.
    """
    _check_name(backbone)
    try:
        with torch.device("meta"):
            model = timm.create_model(backbone, pretrained=False)
        parameters = inspect.signature(type(model).__init__).parameters.values()
    except Exception:  # the real build (describe_features) reports what is wrong
        return CREATE_MODEL_ARGUMENTS
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    own = {parameter.name for parameter in parameters if parameter.kind in named and parameter.name != "self"}
    return CREATE_MODEL_ARGUMENTS | own


@lru_cache(maxsize=256)
def describe_features(
    backbone: str, features_only: bool, num_channels: int, output_stride: int | None, kwargs_json: str
) -> FeatureSpec:
    """Build the model on the meta device (no weights, no init cost) and read its stages. Cached.

    Raises:
        ConfigError: Unknown model name (with close matches), an argument timm rejects, or a model
            without ``feature_info`` (or without ``forward_intermediates`` when ``features_only`` is false).
        CheckpointError: The timm config of a ``hf-hub:`` or ``local-dir:`` model cannot be read.
    """
    _check_name(backbone)
    kwargs = json.loads(kwargs_json)
    request = TimmModelRequest(backbone, features_only, num_channels, output_stride, kwargs, num_stages=None)
    try:
        try:
            model = request.build(pretrained=False, on_meta=True)
        except (TypeError, ValueError, OSError, ConfigError):
            raise
        except Exception:
            # A model whose __init__ computes with tensor values cannot be built on meta; build it for real.
            model = request.build(pretrained=False, on_meta=False)
    except TypeError as error:
        extra = f" (extra config fields passed to it: {sorted(kwargs)})" if kwargs else ""
        raise ConfigError(
            f"timm.create_model({backbone!r}) failed: {error}{extra}; remove or rename the config fields "
            "the model does not take"
        ) from error
    except OSError as error:
        raise _hub_or_folder_error(backbone, error) from error
    except RuntimeError as error:
        if str(error).startswith("Unknown model"):
            raise _unknown_model(str(error).partition("(")[2].rstrip(")") or backbone) from None
        raise ConfigError(f"timm.create_model({backbone!r}) failed: {error}") from error
    except (ValueError, AssertionError) as error:
        raise ConfigError(f"timm.create_model({backbone!r}) failed: {error}") from error
    dicts = feature_dicts(model)
    if not dicts:
        raise ConfigError(f"timm model {backbone!r} has no feature_info, so its stages are unknown")
    if not features_only and not hasattr(model, "forward_intermediates"):
        raise ConfigError(
            f"timm model {backbone!r} has no forward_intermediates, so features_only=False cannot return its "
            "stages; use features_only=True"
        )
    return FeatureSpec(
        names=tuple(str(entry["module"]) for entry in dicts),
        channels=tuple(int(entry["num_chs"]) for entry in dicts),
        reductions=tuple(int(entry["reduction"]) for entry in dicts),
    )


def weights_source(backbone: str, kwargs: dict[str, Any]) -> str:
    """Where timm would load ``backbone``'s pretrained weights from, in words (timm's order of precedence)."""
    source, model_id = parse_model_name(backbone)
    if source == "hf-hub":
        return f"the Hugging Face hub repository {model_id!r}"
    if source == "local-dir":
        return f"the local folder {model_id}"
    architecture, tag = split_model_name_tag(model_id)
    try:
        cfg = resolve_pretrained_cfg(architecture, tag or None, kwargs.get("pretrained_cfg_overlay")).to_dict()
    except Exception:  # an invalid tag: timm's own error says which
        return f"timm's pretrained config of {model_id!r}"
    if cfg.get("file"):
        return f"the local file {cfg['file']}"
    if cfg.get("hf_hub_id"):
        filename = cfg.get("hf_hub_filename")
        return f"the Hugging Face hub repository {cfg['hf_hub_id']!r}" + (f" (file {filename})" if filename else "")
    if cfg.get("url"):
        return f"the URL {cfg['url']}"
    return "nowhere: timm lists no pretrained weights for this model"


def create_timm_model(request: TimmModelRequest, *, pretrained: bool) -> nn.Module:
    """Build the timm model of ``request`` (every stage); with ``pretrained``, load timm's weights for it.

    Raises:
        CheckpointError: The pretrained weights cannot be reached or read; the message names the model
            and where the weights were looked for.
    """
    if not pretrained:
        return request.build(pretrained=False, on_meta=False)
    try:
        return request.build(pretrained=True, on_meta=False)
    except Exception as error:  # the architecture built without weights, so this is about the weights
        source = weights_source(request.backbone, request.kwargs)
        raise CheckpointError(
            f"cannot load the pretrained weights of timm model {request.backbone!r} from {source}: "
            f"{type(error).__name__}: {error}"
            + _offline_hint("Hugging Face hub" in source)
            + ". Pass a local file with pretrained_cfg_overlay={'file': '/path/to/weights.safetensors'} "
            "or set use_pretrained_backbone=False"
        ) from error


def _frozen_copy(norm: nn.BatchNorm2d | nn.SyncBatchNorm) -> nn.Module:
    frozen: Any
    if isinstance(norm, (BatchNormAct2d, SyncBatchNormAct)):
        frozen = FrozenBatchNormAct2d(norm.num_features, eps=norm.eps)
        frozen.drop = norm.drop
        frozen.act = norm.act
    else:
        frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps)
    # As timm's freeze_batch_norm_2d does, so that timm's unfreeze_batch_norm_2d can undo it.
    frozen.num_features = norm.num_features
    frozen.affine = norm.affine
    sources = {"running_mean": norm.running_mean, "running_var": norm.running_var}
    if norm.affine:
        sources.update(weight=norm.weight, bias=norm.bias)
    with torch.no_grad():
        for name, value in sources.items():
            # Parameters on meta (a checkpoint is about to be loaded): keep the defaults, the load fills them.
            if value is not None and value.device.type != "meta":
                getattr(frozen, name).copy_(value.detach())
    return frozen


def freeze_batch_norm_2d(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d / SyncBatchNorm (and timm's BatchNormAct2d) under ``module`` by a frozen copy.

    The same conversion as timm's ``freeze_batch_norm_2d`` (torchvision's ``FrozenBatchNorm2d``, timm's
    ``FrozenBatchNormAct2d``, same buffer names), except that it also accepts parameters on the meta device.

    Returns:
        ``module``, or its frozen replacement if ``module`` itself is a batch norm.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return _frozen_copy(module)
    for name, child in module.named_children():
        replacement = freeze_batch_norm_2d(child)
        if replacement is not child:
            module.add_module(name, replacement)
    return module
