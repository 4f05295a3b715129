"""Building blocks that the :class:`~backbones.Backbone` training switches act on.

* :class:`CheckpointableLayer`: base class of a plugin's repeated blocks (a transformer layer, a
  residual block, a stage). ``Backbone.gradient_checkpointing_enable()`` makes each of them recompute
  its activations in the backward pass instead of storing them.
* :class:`FrozenBatchNorm2d`: BatchNorm with fixed statistics and affine terms, which
  ``Backbone.freeze_batch_norm()`` puts in place of every ``nn.BatchNorm2d``.
* :func:`drop_path`: stochastic depth for residual branches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CheckpointableLayer", "FrozenBatchNorm2d", "convert_batch_norm_to_frozen", "drop_path"]


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth (Huang et al., 2016): zero a whole sample's residual branch with probability
    ``rate`` and rescale the kept ones by ``1 / (1 - rate)``; the identity outside training or at rate 0.

    The mask is drawn as ``floor(keep + U[0, 1))`` per sample, as the reference implementations draw it.
    """
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    kept = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).add_(keep).floor_()
    return x.div(keep) * kept


class CheckpointableLayer(nn.Module):
    """A module that runs under activation checkpointing while its backbone has it switched on.

    Plugins derive their repeated blocks from it instead of ``nn.Module``; nothing else changes. When
    ``gradient_checkpointing`` is set (by ``Backbone.gradient_checkpointing_enable``), the module is in
    training mode and autograd is recording, a call runs through
    ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: the forward's activations are
    dropped and recomputed during backward, trading compute for memory. Outputs and gradients are the
    same as without it (RNG state is replayed, so dropout masks match).
    """

    gradient_checkpointing: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(super().__call__, *args, use_reentrant=False, **kwargs)
        return super().__call__(*args, **kwargs)


class FrozenBatchNorm2d(nn.Module):
    """``nn.BatchNorm2d`` whose statistics and affine terms are constants.

    Its state-dict keys are BatchNorm's (``weight``, ``bias``, ``running_mean``, ``running_var``), held
    as buffers, so checkpoints load unchanged (``num_batches_tracked`` is accepted and dropped). The
    output is the same in training and evaluation mode: ``(x - mean) / sqrt(var + eps) * weight + bias``.
    """

    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batch_norm(cls, module: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of ``module``'s current statistics and affine terms."""
        frozen = cls(module.num_features, module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.running_mean is not None and module.running_var is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen.to(device=module.weight.device if module.affine else None)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, hidden: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return hidden * scale.to(hidden.dtype).view(1, -1, 1, 1) + shift.to(hidden.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def convert_batch_norm_to_frozen(module: nn.Module) -> int:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` with a :class:`FrozenBatchNorm2d`, in place.

    Returns:
        How many were replaced.

    Raises:
        TypeError: A subclass of ``nn.BatchNorm2d`` with behaviour of its own (such as a fused
            activation) was found; its backbone must override ``Backbone._freeze_batch_norm``.
    """
    count = 0
    for name, child in list(module.named_children()):
        if type(child) in (nn.BatchNorm2d, nn.SyncBatchNorm):
            setattr(module, name, FrozenBatchNorm2d.from_batch_norm(child))  # type: ignore[arg-type]
            count += 1
        elif isinstance(child, nn.BatchNorm2d):
            raise TypeError(
                f"cannot freeze {name} ({type(child).__name__}): it subclasses nn.BatchNorm2d with behaviour of "
                "its own; the backbone must override _freeze_batch_norm to convert it"
            )
        else:
            count += convert_batch_norm_to_frozen(child)
    return count
