"""Inference reparameterisation: fold multi-branch blocks and Conv→BatchNorm pairs into single convolutions.

Some architectures train with parallel branches (a 3x3, a 1x1 and an identity, summed) or with a
BatchNorm after every convolution. At inference all of them are linear in the input, so each block can
be replaced by one convolution computing the same function, which is faster. The protocol:

* A block that can fold itself implements :class:`Reparameterizable`: a ``reparameterize()`` method
  that rewrites the block in place (for example replacing its branches by a single ``nn.Conv2d``).
* :meth:`backbones.Backbone.reparameterize` (or :func:`reparameterize` on any module) calls it on every
  such block, innermost first, after putting the model in evaluation mode. A folded backbone refuses to
  go back to training mode and refuses ``save_pretrained`` (its keys are no longer the checkpoint's).

The helpers here do the arithmetic in one place: :func:`fuse_conv_bn` folds a BatchNorm into the
convolution before it, :func:`branch_kernel` turns a (conv, norm) branch or an identity into a kernel
and bias of a common size, and :func:`conv_from_kernel` builds the folded convolution.

Example:
    >>> model = AutoBackbone.from_pretrained("path/to/pp_lcnet_v3")  # doctest: +SKIP
    >>> model.reparameterize()                                       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._errors import ReparameterizedError
from .layers import FrozenBatchNorm2d

__all__ = [
    "ReparameterizedError",
    "Reparameterizable",
    "branch_kernel",
    "conv_from_kernel",
    "fuse_conv_bn",
    "reparameterize",
]

BatchNorm = nn.BatchNorm2d | FrozenBatchNorm2d


@runtime_checkable
class Reparameterizable(Protocol):
    """A block that can rewrite itself, in place, into an equivalent inference-only form."""

    def reparameterize(self) -> None:
        """Fold this block's branches (and their BatchNorms) into plain convolutions, in place."""


def _norm_scale_shift(norm: BatchNorm) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` in evaluation mode."""
    if norm.running_mean is None or norm.running_var is None:
        raise ReparameterizedError(
            f"cannot fold {type(norm).__name__} without running statistics (track_running_stats=False)"
        )
    std = (norm.running_var + norm.eps).sqrt()
    weight = norm.weight if norm.weight is not None else torch.ones_like(std)
    bias = norm.bias if norm.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - norm.running_mean * scale


def branch_kernel(
    conv: nn.Conv2d | None,
    norm: BatchNorm | None,
    *,
    kernel_size: tuple[int, int],
    channels: int | None = None,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """One branch as a ``(weight, bias)`` pair of a ``kernel_size`` convolution.

    Args:
        conv: The branch's convolution (no dilation; its kernel is zero-padded, centred, to
            ``kernel_size``), or ``None`` for an identity branch.
        norm: The BatchNorm after it (or the identity branch's BatchNorm), or ``None``.
        kernel_size: The folded convolution's kernel size; each side at least the branch's and of
            the same parity, so the centre stays the centre.
        channels: Channels of an identity branch (``conv=None``).
        groups: Groups of the folded convolution (an identity branch's kernel is built for them).

    Returns:
        The kernel ``(out, in / groups, kh, kw)`` and the bias ``(out,)``.
    """
    if conv is not None:
        if conv.dilation != (1, 1):
            raise ValueError(f"cannot fold a dilated convolution ({conv})")
        weight = conv.weight
        kh, kw = weight.shape[-2:]
        if (kernel_size[0] - kh) % 2 or (kernel_size[1] - kw) % 2 or kh > kernel_size[0] or kw > kernel_size[1]:
            raise ValueError(f"a {kh}x{kw} kernel cannot be centred in {kernel_size[0]}x{kernel_size[1]}")
        pad_h, pad_w = (kernel_size[0] - kh) // 2, (kernel_size[1] - kw) // 2
        weight = F.pad(weight, (pad_w, pad_w, pad_h, pad_h))
        bias = (
            conv.bias
            if conv.bias is not None
            else torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        )
    else:
        if channels is None:
            raise ValueError("an identity branch needs channels")
        per_group = channels // groups
        reference = norm.running_mean if norm is not None else None
        weight = torch.zeros(
            channels,
            per_group,
            *kernel_size,
            dtype=getattr(reference, "dtype", None),
            device=getattr(reference, "device", None),
        )
        centre_h, centre_w = kernel_size[0] // 2, kernel_size[1] // 2
        for channel in range(channels):
            weight[channel, channel % per_group, centre_h, centre_w] = 1.0
        bias = torch.zeros(channels, dtype=weight.dtype, device=weight.device)
    if norm is not None:
        scale, shift = _norm_scale_shift(norm)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = bias * scale + shift
    return weight.detach(), bias.detach()


def conv_from_kernel(template: nn.Conv2d, weight: Tensor, bias: Tensor) -> nn.Conv2d:
    """A convolution with ``template``'s stride, groups and channels, ``weight``'s kernel size (padded to
    keep ``template``'s output size) and the given weight and bias."""
    kh, kw = weight.shape[-2:]
    th, tw = template.kernel_size
    padding = template.padding
    if isinstance(padding, str):
        raise ValueError(f"cannot fold a convolution with padding={padding!r}; give it explicit padding")
    conv = nn.Conv2d(
        template.in_channels,
        template.out_channels,
        (kh, kw),
        stride=template.stride,  # type: ignore[arg-type]
        padding=(padding[0] + (kh - th) // 2, padding[1] + (kw - tw) // 2),
        groups=template.groups,
        bias=True,
        padding_mode=template.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)  # type: ignore[union-attr]
    return conv


def fuse_conv_bn(conv: nn.Conv2d, norm: BatchNorm) -> nn.Conv2d:
    """A convolution equal to ``norm(conv(x))`` in evaluation mode (dilation and padding kept)."""
    weight, bias = conv.weight, conv.bias
    scale, shift = _norm_scale_shift(norm)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(weight * scale.view(-1, 1, 1, 1))
        base = bias if bias is not None else torch.zeros_like(shift)
        fused.bias.copy_(base * scale + shift)  # type: ignore[union-attr]
    return fused


def reparameterize(model: nn.Module) -> int:
    """Call ``reparameterize()`` on every :class:`Reparameterizable` block inside ``model``, innermost first.

    The model must be in evaluation mode (BatchNorms are folded with their running statistics).

    Returns:
        How many blocks were folded.

    Raises:
        ReparameterizedError: ``model`` is in training mode.
    """
    if model.training:
        raise ReparameterizedError(
            f"{type(model).__name__} is in training mode; folding uses the BatchNorm running statistics, "
            "so call model.eval() before reparameterize()"
        )
    from ._backbone import Backbone

    count = 0
    for child in model.children():
        count += reparameterize(child)
    # A Backbone's own reparameterize() is the entry point that calls this walk, not a block to fold.
    if isinstance(model, Reparameterizable) and not isinstance(model, Backbone):
        model.reparameterize()
        count += 1
    return count
