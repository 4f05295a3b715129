"""Activation names as transformers' configs spell them (``hidden_act``), in one place for every plugin.

Only parameter-free activations are offered: a learnable one would add checkpoint keys that
transformers' models never have. The table is torch-free, so a config validates without importing
torch; :func:`make_activation` imports it when a module is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ACTIVATIONS", "check_activation", "make_activation"]

ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    # config.json name -> (torch.nn class, its arguments), with the meaning transformers' ACT2FN gives it.
    "gelu": ("GELU", {}),
    "gelu_new": ("GELU", {"approximate": "tanh"}),
    "gelu_pytorch_tanh": ("GELU", {"approximate": "tanh"}),
    "hardswish": ("Hardswish", {}),
    "leaky_relu": ("LeakyReLU", {}),
    "mish": ("Mish", {}),
    "relu": ("ReLU", {}),
    "relu6": ("ReLU6", {}),
    "sigmoid": ("Sigmoid", {}),
    "silu": ("SiLU", {}),
    "swish": ("SiLU", {}),
    "tanh": ("Tanh", {}),
}

# Activations whose in-place form autograd supports (their backward does not need the overwritten input).
_IN_PLACE_CAPABLE = {"ReLU", "ReLU6", "LeakyReLU", "Hardswish", "SiLU"}


def check_activation(name: str, field: str = "hidden_act") -> str:
    """Return ``name`` if it is a supported activation.

    Raises:
        ValueError: Naming the field and listing the supported names.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"{field} {name!r} is not supported; set {field} to one of {sorted(ACTIVATIONS)}")
    return name


def make_activation(name: str, *, inplace: bool = False) -> nn.Module:
    """Build the activation module for ``name``.

    Args:
        name: A key of :data:`ACTIVATIONS`.
        inplace: Let the ReLU family, hardswish and SiLU overwrite their input (the others ignore it); only
            where the input is a fresh tensor nothing else reads (e.g. the output of a norm or of a residual
            sum). It saves one allocation per call, which shows in small mobile networks.
    """
    from torch import nn

    class_name, arguments = ACTIVATIONS[check_activation(name)]
    if inplace and class_name in _IN_PLACE_CAPABLE:
        arguments = {**arguments, "inplace": True}
    module: nn.Module = getattr(nn, class_name)(**arguments)
    return module
