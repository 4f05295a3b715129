"""Tensor helpers of the conformance kit: random weights for parity checkpoints, map comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .. import Backbone, BackboneConfig

__all__ = [
    "assert_close_maps",
    "assert_maps_at_size",
    "assert_random_only_in_training",
    "example_forward_inputs",
    "feature_map_loss",
    "randomize_weights_",
    "saved_activation_bytes",
]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


@torch.no_grad()
def randomize_weights_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and floating buffer a random, well-scaled value, in place.

    Norm weights go to U(0.5, 1.5), BatchNorm running means to N(0, 0.1) and variances to U(0.5, 1.5),
    vectors (biases, scales, tables of rank < 2) to N(0, 0.1), and matrices to N(0, 1/fan_in), so no
    code path can hide behind a zero or identity initialisation and activations stay O(1).

    Returns:
        ``model``.
    """
    generator = torch.Generator().manual_seed(seed)

    def fill(tensor: Tensor, kind: str) -> None:
        shape, dtype = tensor.shape, tensor.dtype
        if kind == "norm_weight":
            value = torch.rand(shape, generator=generator) + 0.5
        elif kind == "vector":
            value = torch.randn(shape, generator=generator) * 0.1
        else:
            fan_in = max(1, tensor[0].numel())
            value = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        tensor.copy_(value.to(dtype))

    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) and name == "weight":
                fill(parameter, "norm_weight")
            elif parameter.dim() < 2:
                fill(parameter, "vector")
            else:
                fill(parameter, "matrix")
        for name, buffer in module.named_buffers(recurse=False):
            if not buffer.is_floating_point():
                continue
            if name == "running_var":
                fill(buffer, "norm_weight")
            elif name == "running_mean":
                fill(buffer, "vector")
    return model


def compare_maps(ours: Sequence[Tensor], reference: Sequence[Tensor], bound: float, scaled: bool) -> float:
    """Assert equal shapes and, per map, ``max|ours - reference|`` (divided by ``max(1, max|reference|)`` when
    ``scaled``) ``<= bound``; return the largest such difference. The rule of the two public helpers below."""
    assert len(ours) == len(reference), f"{len(ours)} feature maps vs {len(reference)} in the reference"
    measure = "max abs diff / max(1, max |reference|)" if scaled else "max abs diff"
    worst = 0.0
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        assert tuple(mine.shape) == tuple(theirs.shape), (
            f"map {index}: shape {tuple(mine.shape)} vs {tuple(theirs.shape)}"
        )
        diff = 0.0
        if mine.numel():
            expected = theirs.detach().double()
            diff = (mine.detach().double() - expected).abs().max().item()
            if scaled:
                diff /= max(1.0, expected.abs().max().item())
        assert diff <= bound, f"map {index} (shape {tuple(mine.shape)}): {measure} {diff:.3g} > {bound}"
        worst = max(worst, diff)
    return worst


def assert_close_maps(ours: Sequence[Tensor], reference: Sequence[Tensor], atol: float = 1e-4) -> float:
    """Assert two sequences of feature maps have equal shapes and max abs difference ``<= atol``.

    Returns:
        The largest absolute difference found.
    """
    return compare_maps(ours, reference, atol, scaled=False)


def feature_map_loss(feature_maps: Sequence[Tensor]) -> Tensor:
    """The training loss of the kit's checks: the sum over feature maps of their mean square (fp32)."""
    return sum((fmap.float().pow(2).mean() for fmap in feature_maps), torch.zeros((), device=feature_maps[0].device))


def example_forward_inputs(model: Backbone, batch_size: int) -> dict[str, Tensor]:
    """Example values of the inputs ``model`` declares in ``extra_forward_inputs`` (see
    :class:`backbones.ForwardInput`), for a batch of ``batch_size`` images, on the model's device.

    Returns:
        Keyword arguments for ``model(pixels, **inputs)``; empty for a backbone that takes images only.
    """
    specs = model.extra_forward_inputs
    if not specs:
        return {}
    device = next((p.device for p in model.parameters()), None)
    return {spec.name: spec.example(model.config, batch_size, device) for spec in specs}


def saved_activation_bytes(model: nn.Module, pixels: Tensor, **forward_inputs: Tensor) -> int:
    """Bytes of tensors autograd stores for backward during one forward (activations plus parameters).

    ``forward_inputs`` are passed to the forward (a backbone's declared extra inputs)."""
    total = 0

    def pack(tensor: Tensor) -> Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(pixels, **forward_inputs)
    return total


def assert_random_only_in_training(model: nn.Module, pixels: Tensor, seed: int = 0) -> None:
    """Assert two training-mode forwards give different first maps and two eval-mode forwards equal ones.

    For a model built with dropout or stochastic depth: it must act in training and never in evaluation.
    The model's declared extra forward inputs get their example values.
    """
    torch.manual_seed(seed)
    from .. import Backbone

    extras = example_forward_inputs(model, pixels.shape[0]) if isinstance(model, Backbone) else {}
    with torch.no_grad():
        first, second = (model.train()(pixels, **extras).feature_maps[0] for _ in range(2))
        third, fourth = (model.eval()(pixels, **extras).feature_maps[0] for _ in range(2))
    assert not torch.equal(first, second), "two training-mode forwards gave the same map: nothing random acted"
    assert torch.equal(third, fourth), "two eval-mode forwards differ: something random acts in evaluation"


def assert_maps_at_size(config: BackboneConfig, shapes: Sequence[tuple[int, ...]], size: int = 224) -> Backbone:
    """Build ``config``'s model (random weights), run one ``size`` x ``size`` image, and assert its maps have
    ``shapes``, its ``channels`` are theirs and its ``out_reductions`` are ``size`` over their heights (its
    declared extra forward inputs get their example values).

    Returns:
        The model, in eval mode, for further checks.
    """
    from .. import AutoBackbone

    model = AutoBackbone.from_config(config).eval()
    channels = getattr(config, "num_channels", 3)
    with torch.no_grad():
        maps = model(torch.randn(1, channels, size, size), **example_forward_inputs(model, 1)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [tuple(shape) for shape in shapes]
    assert model.channels == [shape[1] for shape in shapes]
    assert model.out_reductions == [size // shape[2] for shape in shapes]
    return model
