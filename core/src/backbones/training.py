"""Optimizer parameter groups for fine-tuning: weight decay where it belongs, layer-wise learning-rate decay.

:func:`param_groups` turns any backbone (any ``nn.Module``) into parameter groups for a ``torch.optim``
optimizer. Every trainable parameter lands in exactly one group; frozen ones (``freeze_stages``,
``requires_grad=False``) in none.

* **Weight decay** applies to the weights of linear and convolution layers. These get none (see
  :func:`decays`): parameters with one dimension or fewer (biases, layer-scale gammas), the parameters of
  normalisation layers, position embeddings and relative-position tables, class/register/mask tokens,
  layer-scale factors, and whatever ``no_weight_decay`` names.
* **Layer-wise learning-rate decay** (BEiT's rule, also used by MAE and timm): with ``L`` blocks, the
  embeddings (everything before the first block) are layer 0, block ``i`` is layer ``i + 1``, everything
  after the last block (output norms, necks) is layer ``L + 1``, and layer ``l`` learns at
  ``lr * layer_decay ** (L + 1 - l)``. The blocks are found from the model's structure (see
  :func:`layer_ids`). Hierarchical models are numbered block by block across their stages.

Example:
    >>> from backbones.training import param_groups                               # doctest: +SKIP
    >>> optimizer = torch.optim.AdamW(param_groups(model, lr=1e-4, layer_decay=0.75))  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Any

from torch import nn

from .layers import CheckpointableLayer

__all__ = ["decays", "layer_decay_blocks", "layer_ids", "param_groups"]

# Parameters (or the modules holding them) named like this are not decayed, whatever their shape:
# position embeddings and relative-position tables, tokens, layer-scale factors, Swin V2's attention
# temperature and continuous position bias. Matched against each dot-separated part of the name.
_NO_DECAY_PART = re.compile(
    r"cls_token|class_token|dist_token|register_tokens?|mask_token"
    r"|pos_embed|position_embeddings?|absolute_pos_embed"
    r"|relative_position_bias_table|rel_pos_[hw]|rpb|logit_scale|continuous_position_bias_mlp|cpb_mlp"
    r"|gamma(_\d+)?|lambda_?\d*|layer_scale\w*"
)

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # Plugins write their own norms (channels-first LayerNorm, GlobalResponseNorm): the name says what they are.
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


def decays(name: str, parameter: nn.Parameter, owner: nn.Module, no_weight_decay: Iterable[str] = ()) -> bool:
    """Whether weight decay applies to a parameter (the rule :func:`param_groups` uses).

    Args:
        name: The parameter's name in the model (``"encoder.layer.0.attention.query.weight"``).
        parameter: The parameter.
        owner: The module that holds it directly.
        no_weight_decay: Further names not to decay, as ``fnmatch`` patterns (``"*.rel_pos_h"``); an exact
            name matches itself.

    Returns:
        False for parameters with one dimension or fewer, parameters of normalisation layers, position
        embeddings, relative-position tables, tokens, layer-scale factors and names matching ``no_weight_decay``;
        True otherwise.
    """
    if parameter.ndim <= 1 or _is_norm(owner):
        return False
    if any(_NO_DECAY_PART.fullmatch(part) for part in name.split(".")):
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in no_weight_decay)


def layer_decay_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks layer-wise decay counts, in depth order.

    A backbone declares them with :meth:`backbones.Backbone.layer_decay_blocks`; any other module (or a
    backbone inside a wrapper, e.g. peft's) gets the generic rule: its innermost
    :class:`~backbones.layers.CheckpointableLayer` modules (the repeated blocks every plugin derives from
    it), in module order.
    """
    declared = getattr(model, "layer_decay_blocks", None)
    if callable(declared):
        return list(declared())
    return _innermost_checkpointable_layers(model)


def _innermost_checkpointable_layers(model: nn.Module) -> list[nn.Module]:
    """``model``'s :class:`~backbones.layers.CheckpointableLayer` modules that hold no other one, in module order."""
    return [
        module
        for module in model.modules()
        if isinstance(module, CheckpointableLayer)
        and not any(isinstance(inner, CheckpointableLayer) for inner in module.modules() if inner is not module)
    ]


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """The layer of every parameter for layer-wise learning-rate decay, and the number of blocks.

    Block ``i`` (of :func:`layer_decay_blocks`) is layer ``i + 1``. A parameter outside every block takes
    its place from the order of ``model.named_parameters()``: before the first block it is layer 0 (the
    embeddings); between two blocks it joins the next block (a hierarchical model's downsampling between
    stages, as timm numbers it); after the last block it is layer ``L + 1`` (output norms, necks).

    Returns:
        ``({parameter name: layer}, L)``, frozen parameters included.
    """
    blocks = layer_decay_blocks(model)
    block_of = {id(parameter): index for index, block in enumerate(blocks) for parameter in block.parameters()}
    ids: dict[str, int] = {}
    pending: list[str] = []
    seen_block = False
    for name, parameter in model.named_parameters():
        index = block_of.get(id(parameter))
        if index is None:
            pending.append(name)
            continue
        for waiting in pending:
            ids[waiting] = index + 1 if seen_block else 0
        pending.clear()
        seen_block = True
        ids[name] = index + 1
    for waiting in pending:
        ids[waiting] = len(blocks) + 1
    return ids, len(blocks)


def _check_number(name: str, value: Any, *, low: float, high: float | None, low_open: bool, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value > high):
        raise ValueError(f"{name} must be {fix}, got {value!r}")
    return float(value)


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    layer_decay: float | None = None,
    no_weight_decay: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Parameter groups for a ``torch.optim`` optimizer: weight decay and (optionally) layer-wise lr decay.

    Args:
        model: The backbone, or any module holding one (a model with a head, a peft-adapted backbone).
        lr: The base learning rate (that of the last layer).
        weight_decay: The decay of decayed parameters (see :func:`decays`); the others get 0.
        layer_decay: ``d`` in ``lr * d ** (L + 1 - layer)`` (see :func:`layer_ids`), in (0, 1]; ``None``:
            every parameter learns at ``lr``.
        no_weight_decay: Further parameter names not to decay, as ``fnmatch`` patterns.

    Returns:
        One group per (layer, decayed or not) that has trainable parameters, shallowest layer first. Each
        holds ``params``, ``param_names``, ``weight_decay``, ``lr`` (already scaled), ``lr_scale`` (the
        factor; schedulers that rescale from a base lr, such as timm's, read it) and ``layer_id``.

    Raises:
        ValueError: A number is out of range, ``model`` has nothing to train, or ``layer_decay`` is given
            for a model without blocks.

    Example:
        >>> groups = param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=0.65)  # doctest: +SKIP
        >>> optimizer = torch.optim.AdamW(groups)                                       # doctest: +SKIP
    """
    lr = _check_number("lr", lr, low=0.0, high=None, low_open=True, fix="positive")
    weight_decay = _check_number("weight_decay", weight_decay, low=0.0, high=None, low_open=False, fix="0 or more")
    if layer_decay is not None:
        layer_decay = _check_number(
            "layer_decay", layer_decay, low=0.0, high=1.0, low_open=True, fix="in (0, 1] (e.g. 0.75), or None for none"
        )
    if isinstance(no_weight_decay, str):
        no_weight_decay = (no_weight_decay,)
    patterns = tuple(no_weight_decay)
    ids, num_blocks = layer_ids(model) if layer_decay is not None else ({}, 0)
    if layer_decay is not None and num_blocks == 0:
        raise ValueError(
            f"layer_decay needs the blocks of {type(model).__name__}, and it has none (no "
            "backbones.layers.CheckpointableLayer and no layer_decay_blocks()); derive its blocks from "
            "CheckpointableLayer or override Backbone.layer_decay_blocks, or pass layer_decay=None"
        )
    modules = dict(model.named_modules())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        owner = modules[name.rpartition(".")[0]]
        decayed = decays(name, parameter, owner, patterns)
        layer = ids.get(name, 0)
        scale = layer_decay ** (num_blocks + 1 - layer) if layer_decay is not None else 1.0
        group = groups.get((layer, decayed))
        if group is None:
            group = groups[(layer, decayed)] = {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr": lr * scale,
                "lr_scale": scale,
                "layer_id": layer,
            }
        group["params"].append(parameter)
        group["param_names"].append(name)
    if not groups:
        raise ValueError(
            f"{type(model).__name__} has no trainable parameter (all are frozen); unfreeze some "
            "(freeze_stages(0), requires_grad_(True)) before building an optimizer"
        )
    return [groups[key] for key in sorted(groups, key=lambda key: (key[0], not key[1]))]
