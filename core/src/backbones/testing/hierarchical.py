"""Test helpers of hierarchical vision transformers (public: ``backbones.testing.hierarchical``).

Swin-style and neighbourhood-attention backbones embed 4 x 4 patches, then run stages that attend within
windows and halve the map between stages. Maps that do not fill whole windows are padded, so a stage of stride
``r`` is ``ceil(size / r)`` wide. Their conformance classes declare a config rather than write ``make_config``::

    from backbones.testing.hierarchical import SWIN_TINY, WindowConformance

    class TestSwinConformance(WindowConformance):
        config_class = SwinConfig
        config = dict(SWIN_TINY)

A class that sets ``default_pyramid`` also gets the default-size check of a four-stage pyramid of strides 4 to 32
(:data:`PYRAMID_REDUCTIONS`, :func:`assert_pyramid_at_size`). Also here: the map shapes of stages at their
reductions (:func:`stage_shapes`), a real-size pyramid built on the meta device against its transformers
counterpart (:func:`assert_pyramid_builds_on_meta`), the Swin-family sizes several plugins' tests share
(:data:`SWIN_TINY`, :data:`SWIN_SMALL`), and the check that an attention bias computed once and cached still trains
(:func:`assert_cached_bias_trains`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from .. import AutoBackbone, Backbone, BackboneConfig
from . import BackboneConformance, assert_maps_at_size, random_pixels
from ._declared import declare_checks

__all__ = [
    "PYRAMID_REDUCTIONS",
    "SWIN_SMALL",
    "SWIN_TINY",
    "HierarchicalConformance",
    "WindowConformance",
    "assert_cached_bias_trains",
    "assert_pyramid_at_size",
    "assert_pyramid_builds_on_meta",
    "stage_shapes",
]

SWIN_TINY: Mapping[str, Any] = MappingProxyType(
    {
        "embed_dim": 16,
        "depths": [1, 2],
        "num_heads": [2, 4],
        "window_size": 4,
        "patch_size": 4,
        "image_size": 32,
        "drop_path_rate": 0.0,
    }
)
"""Two stages of a Swin-style config (Swin's field names): 16 wide, windows of 4, 4-pixel patches of a 32-pixel
pre-training image. Enough for regular and shifted windows, patch merging, and a stage of a single window.
Spread it into a plugin's own: ``{**SWIN_TINY, "image_size": 48}``."""

SWIN_SMALL: Mapping[str, Any] = MappingProxyType({**SWIN_TINY, "depths": [1, 2, 2], "num_heads": [2, 2, 4]})
"""Three stages (four stage names) of the same family, for selections such as ``[1, 3]``: the parity size."""

PYRAMID_REDUCTIONS: tuple[int, ...] = (4, 8, 16, 32)
"""The reductions of the four stages of a 4 x 4 patch embedding followed by three halvings."""


def stage_shapes(
    channels: Sequence[int],
    size: int | tuple[int, int],
    reductions: Sequence[int] = PYRAMID_REDUCTIONS,
    batch: int = 1,
) -> list[tuple[int, int, int, int]]:
    """The shapes of the maps of stages ``channels`` wide at ``reductions``, for images of ``size``.

    A stage of stride ``r`` is ``ceil(side / r)`` pixels along each side (a map that does not fill whole windows
    or patches is padded); the default reductions are the four-stage pyramid's (:data:`PYRAMID_REDUCTIONS`).

    Args:
        channels: The stages' widths, in order.
        size: The images' side, or their ``(height, width)``.
        reductions: The stages' reductions, one a width.
        batch: The batch size.

    Returns:
        ``(batch, width, height, width)`` of each stage, as ``[tuple(fmap.shape) for fmap in maps]`` lists them.

    Raises:
        ValueError: ``channels`` and ``reductions`` differ in length.
    """
    if len(channels) != len(reductions):
        raise ValueError(
            f"{len(channels)} widths for {len(reductions)} reductions: give stage_shapes one reduction per width"
        )
    height, width = (size, size) if isinstance(size, int) else size
    return [
        (batch, channel, math.ceil(height / reduction), math.ceil(width / reduction))
        for channel, reduction in zip(channels, reductions)
    ]


class HierarchicalConformance(BackboneConformance):
    """:class:`~backbones.testing.BackboneConformance` of a hierarchical transformer, declared by its config.

    It declares its ``config_class`` and ``config`` (see :class:`~backbones.testing.BackboneConformance`). The
    images are 32 x 32 and 40 x 56: 40 x 56 gives a 10 x 14 grid of 4-pixel patches, a multiple of no window
    or neighbourhood of the tiny configs, so every stage of a padding architecture pads. An architecture with
    other size rules (Hiera's whole mask units, PVTv2's reduced key maps) declares its own ``input_sizes``.

    Generated check (there only when declared): ``test_default_size_pyramid`` (marked ``slow``), the default
    config's model selecting its four stages at 224 x 224 (:func:`assert_pyramid_at_size`).

    Class attributes:
        default_pyramid: The four stage widths of ``config_class()``, whose stages reduce by
            :data:`PYRAMID_REDUCTIONS`; ``None``: no default-size check.
    """

    input_sizes: ClassVar[tuple[tuple[int, int], ...]] = ((32, 32), (40, 56))
    default_pyramid: ClassVar[tuple[int, int, int, int] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declare_checks(cls, HierarchicalConformance, {"test_default_size_pyramid": cls.default_pyramid is not None})

    @pytest.mark.slow
    def test_default_size_pyramid(self) -> None:
        assert self.default_pyramid is not None
        assert_pyramid_at_size(self.config_class(out_indices=[1, 2, 3, 4]), self.default_pyramid)


class WindowConformance(HierarchicalConformance):
    """:class:`HierarchicalConformance` of a shifted-window (Swin-style) backbone.

    ``torch.export`` and ONNX hold with dynamic height and width for any size whose deepest stage map is at
    least 2 wide, i.e. above the deepest stride (8 for two stages): the forward has no branch on the size
    (maps are padded to whole windows; windows never shrink to the map), but a map axis of exactly 1 is a
    different case to the tracer (a size-1 axis broadcasts), so one program cannot hold for 1 and for larger
    sizes at once.
    """

    export_range: ClassVar[tuple[int, int] | None] = (9, 1024)


def assert_pyramid_at_size(config: BackboneConfig, channels: Sequence[int], size: int = 224) -> Backbone:
    """Assert a default-size model's four stage maps: ``channels`` wide at :data:`PYRAMID_REDUCTIONS`, finite.

    Builds ``config``'s model with random weights (select the four stages, ``out_indices=[1, 2, 3, 4]``) and
    runs one ``size`` x ``size`` image through it (:func:`~backbones.testing.assert_maps_at_size`), then checks
    that another image gives finite maps.

    Args:
        config: A config of the architecture's default size, selecting its four stages.
        channels: The four stages' widths.
        size: The image's height and width; a multiple of 32.

    Returns:
        The model, in eval mode, for further checks.
    """
    model = assert_maps_at_size(config, stage_shapes(channels, size), size)
    with torch.no_grad():
        maps = model(random_pixels(size, size, batch=1)).feature_maps
    assert all(torch.isfinite(fmap).all() for fmap in maps), "a default-size feature map is not finite"
    return model


def assert_pyramid_builds_on_meta(
    config: BackboneConfig, reference: Callable[[], nn.Module], channels: Sequence[int], size: int = 224
) -> tuple[Backbone, int]:
    """Assert a real-size four-stage backbone is laid out as its transformers counterpart, on the meta device.

    Builds ``config``'s backbone and ``reference()`` under ``torch.device("meta")`` (nothing is allocated) and runs
    one ``size`` x ``size`` image through ours. Both state dicts must hold the same names with the same shapes and
    both models the same number of parameters; our maps must be ``channels`` wide at :data:`PYRAMID_REDUCTIONS`
    (:func:`stage_shapes`), as our ``channels`` and ``out_reductions`` say.

    Args:
        config: A real-size config selecting the four stages.
        reference: Builds transformers' model of the same size (called on the meta device).
        channels: The four stages' widths.
        size: The image's height and width; a multiple of 32.

    Returns:
        Our meta model and its parameter count.
    """
    with torch.device("meta"):
        model = AutoBackbone.from_config(config)
        oracle = reference()
        maps = model(torch.empty(1, 3, size, size)).feature_maps
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == {name: tuple(tensor.shape) for name, tensor in oracle.state_dict().items()}
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == sum(parameter.numel() for parameter in oracle.parameters())
    assert [tuple(fmap.shape) for fmap in maps] == stage_shapes(channels, size)
    assert model.channels == list(channels) and model.out_reductions == list(PYRAMID_REDUCTIONS)
    return model, count


def assert_cached_bias_trains(model: Backbone, parameters: Iterable[nn.Parameter], pixel_values: Tensor) -> None:
    """Assert that parameters an attention bias is computed from get gradients in eval mode, once it is cached.

    A model that caches its window attention's bias in eval mode (Swin's relative position table, Swin V2's
    continuous position-bias MLP) must still let that bias train: a forward without gradients fills the cache,
    then a forward with gradients must reach the parameters.

    Args:
        model: The backbone, in eval mode, with zero-gradient parameters.
        parameters: Parameters the cached bias is computed from.
        pixel_values: An input the model takes.

    Raises:
        AssertionError: A parameter got no gradient, or an all-zero one.
    """
    with torch.no_grad():
        model(pixel_values)  # fills the cache
    model(pixel_values).feature_maps[0].pow(2).sum().backward()
    for parameter in parameters:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, (
            f"a parameter of shape {tuple(parameter.shape)} got no gradient through the cached attention bias"
        )
