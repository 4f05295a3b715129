"""The conformance kit declared for a vision transformer (public: ``backbones.testing.vit``).

A ViT embeds an image with a patch projection: a stride-``p`` convolution without padding, so a map is
``size // p`` wide (the rows and columns that do not fill a patch are dropped). Its tests declare a config
rather than write ``make_config``::

    from backbones.testing.vit import ViTConformance

    class TestPixioConformance(ViTConformance):
        config_class = PixioConfig  # its model_type is the tested one
        config = {"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "patch_size": 8}

    class TestPixioSiluConformance(TestPixioConformance):
        deployment_checks = False
        config = {**TestPixioConformance.config, "hidden_act": "silu"}

:class:`ViTParity` holds the parity declarations plain ViTs share as defaults. The rules every ViT config shares
(core's :mod:`backbones.validation`) are declared by name rather than written out again: :class:`ViTConfigErrors`
generates their entries, with the exact messages, from the tested config. :func:`assert_prunes_deeper_layers`,
:func:`assert_builds_on_meta`, :func:`assert_position_resampling` (:func:`assert_model_resamples_positions` for a
model's own table) and :func:`reload_without` (:func:`reinitialised_when_missing`, :func:`redrawn_when_missing`)
are the pruning, real-size, position-resampling and missing-weight checks of a plain ViT,
:func:`assert_layer_scaled_init` the fresh init of a DINOv2-style layer, and :func:`assert_same_maps` compares two
models' maps over several inputs; the tables (``TINY_VIT``, ``RESAMPLING_SIZES``, ``TINY_ROTARY_VIT``,
``ROTARY_VIT_INVALID_VALUES``, ``TINY_DETR_DECODER``, ``REFERENCE_LAYER_RENAMES``, ...) are the sizes and values the
ViT plugins' tests share.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sized
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, cast

import pytest

from .. import AutoBackbone, Backbone, BackboneConfig
from . import BackboneConformance, ConfigErrors, TransformersParity, assert_parity, random_pixels
from ._declared import declare_checks

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import Tensor, nn

__all__ = [
    "REFERENCE_LAYER_RENAMES",
    "RESAMPLING_SIZES",
    "ROTARY_AUGMENTATIONS",
    "ROTARY_VIT_INVALID_VALUES",
    "SMALL_ROTARY_VIT",
    "SMALL_VIT",
    "TINY_DETR_DECODER",
    "TINY_ROTARY_VIT",
    "TINY_VIT",
    "VIT_CONFIG_RULES",
    "ViTConfigErrors",
    "ViTConformance",
    "ViTParity",
    "assert_builds_on_meta",
    "assert_layer_scaled_init",
    "assert_model_resamples_positions",
    "assert_position_resampling",
    "assert_prunes_deeper_layers",
    "assert_same_maps",
    "meta_parameter_count",
    "redrawn_when_missing",
    "reinitialised_when_missing",
    "reload_without",
    "vit_config_errors",
]

TINY_VIT: Mapping[str, Any] = MappingProxyType(
    {"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
)
"""The conformance kit's ViT size (DINOv2's field names): 16 wide, 3 layers of 2 heads, a 4x4 grid of 8-pixel
patches at 32x32. Spread it into a plugin's own config: ``{**TINY_VIT, "num_register_tokens": 2}``."""

SMALL_VIT: Mapping[str, Any] = MappingProxyType(
    {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 32, "patch_size": 8}
)
"""The parity size of the same family: 32 wide, 4 layers of 4 heads, the same 4x4 grid of positions."""

RESAMPLING_SIZES: tuple[tuple[int, int], ...] = ((32, 32), (48, 40), (24, 40), (42, 59))
"""Input sizes for the 4x4 position grid of :data:`TINY_VIT` and :data:`SMALL_VIT`: the training size (the
positions used as stored), a larger non-square size (rows and columns upsampled), a size whose rows are
downsampled (where antialiasing changes the table), and a size that is no multiple of the patch (the projection
floors it). The first three are :class:`ViTConformance`'s default ``input_sizes``."""

TINY_ROTARY_VIT: Mapping[str, Any] = MappingProxyType(
    {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_register_tokens": 2,
        "pos_embed_rescale": None,
    }
)
"""The conformance size of a DINOv3-style rotary ViT (DINOv3's field names, its 16-pixel patches): 16 wide with
an MLP of 32, 3 layers of 2 heads, 2 registers, and the train-time rescaling of the rotary coordinates off (the kit
compares training steps, whose draws would differ)."""

SMALL_ROTARY_VIT: Mapping[str, Any] = MappingProxyType(
    {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4}
)
"""The parity size of the same family: 32 wide with an MLP of 64, 4 layers of 4 heads."""

TINY_DETR_DECODER: Mapping[str, Any] = MappingProxyType(
    {
        "d_model": 16,
        "decoder_ffn_dim": 32,
        "decoder_layers": 1,
        "decoder_self_attention_heads": 2,
        "decoder_cross_attention_heads": 2,
        "num_queries": 5,
        "group_detr": 2,
        "num_labels": 3,
    }
)
"""The rest of a tiny DETR-family detector (transformers' LW-DETR and RF-DETR configs) around a ViT under test:
one decoder layer 16 wide, 5 queries in 2 groups, 3 labels. Its checkpoint holds the backbone under a prefix."""

ROTARY_AUGMENTATIONS: Mapping[str, Any] = MappingProxyType(
    {"pos_embed_shift": 0.2, "pos_embed_jitter": 1.5, "pos_embed_rescale": 2.0}
)
"""Every train-time augmentation of the rotary coordinates of the same family on: shift, jitter and rescale."""

REFERENCE_LAYER_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
)
"""transformers 5's in-memory names of a BERT-style ViT layer's weights, for a parity test's ``key_renames``:
its files (and our models) keep ``attention.attention.query``, ``attention.output.dense``, ``intermediate.dense``
and ``output.dense``; in memory these are ``attention.q_proj`` (``k_proj``, ``v_proj``), ``attention.o_proj``,
``mlp.fc1`` and ``mlp.fc2``. Applied in order (the attention's output projection before the MLP's); a layer whose
MLP already has transformers' names (DINOv2's) is left alone by the last two."""


class ViTConformance(BackboneConformance):
    """:class:`~backbones.testing.BackboneConformance` of a patch-embedding vision transformer.

    Its maps are ``size // patch_size`` wide (``spatial_rounding = "floor"``); it declares its ``config_class``
    and ``config`` (see :class:`~backbones.testing.BackboneConformance`); ``input_sizes`` defaults to the first
    three :data:`RESAMPLING_SIZES`.
    """

    spatial_rounding: ClassVar[str] = "floor"
    input_sizes: ClassVar[tuple[tuple[int, int], ...]] = RESAMPLING_SIZES[:3]


class ViTParity(TransformersParity):
    """:class:`~backbones.testing.TransformersParity` of a plain (one-resolution) ViT, with the declarations such a
    model shares as defaults, and the weights its backbone leaves out of transformers'.

    Defaults: the checkpoint's keys match as they are (``backbone_prefix = ""``); one hidden state for the stem
    and one per layer (``hidden_state_count``, from ``config["num_hidden_layers"]``); attentions compared; every
    stage, the layers, a middle stage and the last selected (``out_indices``); stages 0, 2 and 4 for the task
    and round-trip checks.

    Left out: a mask token that only masked pre-training uses, and the final norm when ``apply_layernorm`` is
    off (transformers builds it all the same, and never runs it). Such keys are unused when our backbone loads
    transformers' checkpoint, and transformers reports them missing (and initialises them) when it loads ours;
    their names are the same in both directions. The defaults are the DINOv2 family's names.

    Generated check, with ``prefix_token_count`` set: ``test_prefix_tokens_match_transformers``, our prefix tokens
    of stages 0, 2 and 4 (at 48x40) are the first ``prefix_token_count`` tokens of transformers' hidden states
    through its final norm (``layernorm``), for ``prefix_token_variant`` (default: the first variant).

    Class attributes:
        never_built_keys: The keys of weights our backbone never builds, whatever the variant.
        final_norm_keys: The keys of the final norm, not built by a variant with ``apply_layernorm=False``.
        prefix_token_count: The prefix tokens (class tokens, registers) a stage returns; 0: no check.
        prefix_token_variant: The variant whose prefix tokens are checked.
    """

    never_built_keys: ClassVar[tuple[str, ...]] = ("embeddings.mask_token",)
    final_norm_keys: ClassVar[tuple[str, ...]] = ("layernorm.bias", "layernorm.weight")
    backbone_prefix: ClassVar[str | None] = ""
    compare_attentions: ClassVar[bool] = True
    out_indices: ClassVar[tuple[tuple[int, ...], ...]] = ((0, 1, 2, 3, 4), (1, 2, 3, 4), (2,), (-1,))
    task_out_indices: ClassVar[tuple[int, ...]] = (0, 2, 4)
    round_trip_out_indices: ClassVar[tuple[int, ...]] = (0, 2, 4)
    prefix_token_count: ClassVar[int] = 0
    prefix_token_variant: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.hidden_state_count is None and "num_hidden_layers" in cls.config:
            cls.hidden_state_count = cls.config["num_hidden_layers"] + 1
        wanted = {"test_prefix_tokens_match_transformers": bool(cls.prefix_token_count)}
        declare_checks(cls, ViTParity, wanted)

    def never_built(self, variant: str) -> list[str]:
        """The keys of transformers' weights our backbone of ``variant`` does not build, sorted."""
        keys = list(self.never_built_keys)
        if not self.options(variant).get("apply_layernorm", True):
            keys += self.final_norm_keys
        return sorted(keys)

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        """The never-built keys (see :meth:`never_built`)."""
        return self.never_built(variant)

    def expected_round_trip_missing(self, variant: str) -> list[str]:
        """The never-built keys (see :meth:`never_built`)."""
        return self.never_built(variant)

    def test_prefix_tokens_match_transformers(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        import torch

        variant = self.prefix_token_variant or next(iter(self.variants))
        directory, reference = self.reference_checkpoint(variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=[0, 2, 4])
        inputs = self.pixels((48, 40))
        count = self.prefix_token_count
        with torch.no_grad():
            output = model(inputs, output_prefix_tokens=True)
            states = reference(inputs, output_hidden_states=True).hidden_states
            expected = [reference.layernorm(states[index])[:, :count] for index in (0, 2, 4)]
        shape = (self.batch_size, count, self.options(variant)["hidden_size"])
        assert [tuple(tokens.shape) for tokens in output.prefix_tokens] == [shape] * 3
        assert_parity(output.prefix_tokens, expected, self.tolerance)


# -- config errors ------------------------------------------------------------------------------------------------

ErrorCase = tuple[dict[str, Any], str]


def _heads_divide_the_width(config: BackboneConfig, patch_size_example: int) -> ErrorCase:
    width = config.hidden_size  # type: ignore[attr-defined]
    heads = next(count for count in (3, 5, 7) if width % count)
    message = f"num_attention_heads={heads} does not divide hidden_size={width}; choose a head count that divides"
    return {"num_attention_heads": heads}, re.escape(message)


def _head_width_a_multiple_of_four(config: BackboneConfig, patch_size_example: int) -> ErrorCase:
    message = (
        "hidden_size / num_attention_heads = 24 / 4 = 6 must be a multiple of 4: the rotary embedding gives each "
        "head a sine-cosine pair per axis"
    )
    return {"hidden_size": 24, "num_attention_heads": 4}, re.escape(message)


def _square_patches(config: BackboneConfig, patch_size_example: int) -> ErrorCase:
    patch = config.patch_size  # type: ignore[attr-defined]
    pair = [patch, patch // 2]
    example = patch_size_example
    message = f"patch_size must be one int or a square pair such as [{example}, {example}], got {pair}"
    return {"patch_size": pair}, re.escape(message)


def _unknown_activation(config: BackboneConfig, patch_size_example: int) -> ErrorCase:
    message = "hidden_act 'swishy' is not supported; set hidden_act to one of ["
    return {"hidden_act": "swishy"}, re.escape(message) + r".*'gelu'"


def _square_grid(field: str) -> Callable[[BackboneConfig, int], ErrorCase]:
    def case(config: BackboneConfig, patch_size_example: int) -> ErrorCase:
        patch = config.patch_size  # type: ignore[attr-defined]
        size = (4 * patch, 6 * patch)
        message = (
            f"{field} {size} gives a 4x6 grid of patches, but the absolute position table is a square grid; "
            f"use a square {field}"
        )
        return {field: list(size)}, re.escape(message)

    return case


def _holds_a_patch(field: str) -> Callable[[BackboneConfig, int], ErrorCase]:
    def case(config: BackboneConfig, patch_size_example: int) -> ErrorCase:
        patch = config.patch_size  # type: ignore[attr-defined]
        message = f"{field} {patch // 2} is smaller than patch_size {patch}; set {field} >= patch_size"
        return {field: patch // 2}, re.escape(message)

    return case


VIT_CONFIG_RULES: Mapping[str, Callable[[BackboneConfig, int], ErrorCase]] = MappingProxyType(
    {
        "heads-divide-the-width": _heads_divide_the_width,
        "head-width-a-multiple-of-four": _head_width_a_multiple_of_four,
        "square-patches": _square_patches,
        "unknown-activation": _unknown_activation,
        "square-position-grid": _square_grid("image_size"),
        "square-absolute-position-grid": _square_grid("pretrain_image_size"),
        "image-holds-a-patch": _holds_a_patch("image_size"),
        "pre-training-size-holds-a-patch": _holds_a_patch("pretrain_image_size"),
    }
)
"""The rules of core's :mod:`backbones.validation` a ViT config applies, by case name: each builds the entry
``(overrides, message)`` of :attr:`ConfigErrors.errors <backbones.testing.ConfigErrors>` for a valid config
(read for its ``hidden_size`` and ``patch_size``) and the architecture's usual patch size (its messages' example).

* ``heads-divide-the-width``: a head count (3, else 5, else 7) that does not divide ``hidden_size``.
* ``head-width-a-multiple-of-four``: 4 heads of 6 (24 wide) for 2-D rotary positions.
* ``square-patches``: ``patch_size=[p, p // 2]``.
* ``unknown-activation``: ``hidden_act="swishy"``.
* ``square-position-grid`` / ``square-absolute-position-grid``: ``image_size`` / ``pretrain_image_size``
  ``[4p, 6p]``, a 4x6 grid that a square position table cannot hold.
* ``image-holds-a-patch`` / ``pre-training-size-holds-a-patch``: ``image_size`` / ``pretrain_image_size``
  ``p // 2``, smaller than one patch.
"""


def vit_config_errors(
    config: BackboneConfig, rules: tuple[str, ...], patch_size_example: int = 16
) -> dict[str, ErrorCase]:
    """The :data:`VIT_CONFIG_RULES` entries named by ``rules``, for the valid ``config``.

    Args:
        config: A valid config of the tested class (the one every entry's overrides apply to).
        rules: Names of :data:`VIT_CONFIG_RULES`.
        patch_size_example: The patch size the config's ``square-patches`` message shows as an example.

    Raises:
        KeyError: For a name that is no rule, listing the rules.
    """
    unknown = [rule for rule in rules if rule not in VIT_CONFIG_RULES]
    if unknown:
        raise KeyError(f"unknown ViT config rules {unknown}; use names of VIT_CONFIG_RULES: {list(VIT_CONFIG_RULES)}")
    return {rule: VIT_CONFIG_RULES[rule](config, patch_size_example) for rule in rules}


class ViTConfigErrors(ConfigErrors):
    """:class:`~backbones.testing.ConfigErrors` of a ViT config: its ``errors`` also hold an entry per name in
    ``vit_rules`` (see :data:`VIT_CONFIG_RULES`), generated from ``config_class(**config)``::

        class TestPixioConfigErrors(ViTConfigErrors):
            config_class = PixioConfig
            config = TINY
            vit_rules = ("heads-divide-the-width", "square-position-grid", "image-holds-a-patch", "square-patches")
            invalid_values = (("n_cls_tokens", 0, "greater than or equal to 1"),)

    Class attributes:
        vit_rules: Names of the core ViT rules the config applies.
        patch_size_example: The architecture's usual patch size, the example of the ``square-patches`` message.
    """

    vit_rules: ClassVar[tuple[str, ...]] = ()
    patch_size_example: ClassVar[int] = 16

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "vit_rules" in cls.__dict__:
            generated = vit_config_errors(cls.config_class(**cls.config), cls.vit_rules, cls.patch_size_example)
            twice = sorted(set(generated) & set(cls.errors))
            if twice:
                raise TypeError(f"{cls.__name__}: errors {twice} are also vit_rules; declare each case once")
            cls.errors = {**generated, **cls.errors}
        super().__init_subclass__(**kwargs)


ROTARY_VIT_INVALID_VALUES: tuple[tuple[str, Any, str], ...] = (
    ("pos_embed_jitter", 0.5, "greater than or equal to 1"),
    ("pos_embed_rescale", 0.9, "greater than or equal to 1"),
    ("pos_embed_shift", -0.1, "greater than or equal to 0"),
    ("num_register_tokens", -1, "greater than or equal to 0"),
    ("attention_dropout", 1.0, "less than 1"),
    ("intermediate_size", 0, "greater than or equal to 1"),
)
"""The ``invalid_values`` of :class:`~backbones.testing.ConfigErrors` every DINOv3-style rotary ViT config shares
(DINOv3 ViT and the configs built on its rotary positions): the ranges of the train-time coordinate
augmentations, the register count, the attention dropout and the MLP width. Extend it with the config's own."""


# -- pruning and real sizes ---------------------------------------------------------------------------------------


def assert_prunes_deeper_layers(
    config: BackboneConfig,
    layers: Callable[[Backbone], Sized],
    pruned: list[str],
    size: tuple[int, int],
    shape: tuple[int, ...],
) -> Backbone:
    """Assert the backbone of ``config`` (one out index, ``k``) prunes the stages after ``stage<k>``.

    ``prune_unused_stages`` returns exactly ``pruned``, ``k`` layers are left, and the pruned model still gives
    its one map, of ``shape`` for a batch of two ``size`` images.

    Args:
        config: The config, selecting one stage.
        layers: The model's layer list (e.g. ``lambda model: model.encoder.layer``).
        pruned: The stage names pruning must report.
        size: ``(height, width)`` of the images run after pruning.
        shape: The expected map shape.

    Returns:
        The pruned model.
    """
    import torch

    model = AutoBackbone.from_config(config)
    (deepest,) = config.out_indices
    assert model.prune_unused_stages() == pruned
    assert len(layers(model)) == deepest
    with torch.no_grad():
        (fmap,) = model(random_pixels(*size)).feature_maps
    assert tuple(fmap.shape) == shape
    return model


def meta_parameter_count(build: Callable[[], nn.Module]) -> int:
    """The parameter count of the model ``build()`` makes on the meta device (nothing is allocated)."""
    import torch

    with torch.device("meta"):
        model = build()
    return sum(parameter.numel() for parameter in model.parameters())


def assert_builds_on_meta(
    config: BackboneConfig,
    size: tuple[int, int],
    *,
    width: int,
    reduction: int,
    stages: int | None = None,
    prefix_tokens: int | None = None,
) -> tuple[Backbone, int]:
    """Assert the backbone of a real-size ``config`` builds and runs one ``size`` image on the meta device.

    Every parameter stays on the meta device, each selected map is ``(1, width, height // reduction,
    width // reduction)``, the channels and reductions say so, and (when given) the model has ``stages``
    stage names and each stage ``prefix_tokens`` prefix tokens.

    Args:
        config: The real-size config.
        size: ``(height, width)`` of the image.
        width: The maps' channels.
        reduction: The maps' reduction (the patch size).
        stages: The number of stage names (the stem and one per layer), if checked.
        prefix_tokens: The number of prefix tokens per selected stage, if checked.

    Returns:
        The meta model and its parameter count.
    """
    import torch

    with torch.device("meta"):
        model = AutoBackbone.from_config(config)
        output = model(torch.empty(1, 3, *size), output_prefix_tokens=prefix_tokens is not None)
    selected = len(config.out_indices)
    assert all(parameter.device.type == "meta" for parameter in model.parameters())
    if stages is not None:
        assert len(model.stage_names) == stages
    assert model.channels == [width] * selected and model.out_reductions == [reduction] * selected
    grid = (size[0] // reduction, size[1] // reduction)
    assert [tuple(fmap.shape) for fmap in output.feature_maps] == [(1, width, *grid)] * selected
    if prefix_tokens is not None:
        assert [tuple(tokens.shape) for tokens in output.prefix_tokens] == [(1, prefix_tokens, width)] * selected
    return model, sum(parameter.numel() for parameter in model.parameters())


def assert_same_maps(
    ours: Callable[..., Any], reference: Callable[..., Any], inputs: Iterable[Tensor], tolerance: float = 1e-4
) -> None:
    """Assert two backbones give the same feature maps for each batch of ``inputs`` (compared without gradients).

    Args:
        ours: Our backbone.
        reference: The model it must match: any callable whose output has ``feature_maps`` (e.g. transformers'
            backbone, or a detector's trunk).
        inputs: The pixel batches, e.g. ``map(self.pixels, sizes)`` in a :class:`~backbones.testing.TransformersParity`.
        tolerance: The largest absolute difference allowed (see :func:`~backbones.testing.assert_parity`).
    """
    import torch

    for pixels in inputs:
        with torch.no_grad():
            assert_parity(ours(pixels).feature_maps, reference(pixels).feature_maps, tolerance)


# -- positions and checkpoints ------------------------------------------------------------------------------------


def assert_position_resampling(
    resample: Callable[[int, int], Tensor],
    table: Tensor,
    size: tuple[int, int],
    mode: str = "bicubic",
    antialias: bool = False,
) -> None:
    """Assert a square table of patch positions is resampled by target size in float32, in the table's dtype.

    ``resample(rows, columns)`` must equal ``table`` laid out as its square grid, interpolated to ``size`` with
    ``mode`` (``align_corners=False``, ``antialias``) in float32 and cast back to the table's dtype, and return
    ``table`` itself at the table's own grid. With ``antialias``, the antialiased and plain resamplings must
    differ (else the check could not tell them apart).

    Args:
        resample: The model's resampling of its patch positions (e.g. ``model.embeddings._patch_positions``).
        table: The stored positions of the patches, ``(1, grid * grid, width)`` (prefix tokens' left out).
        size: ``(rows, columns)`` resampled to.
        mode: The interpolation mode of :func:`torch.nn.functional.interpolate`.
        antialias: Whether the resampling antialiases.
    """
    import math

    import torch

    grid, width = math.isqrt(table.shape[1]), table.shape[2]
    square = table.reshape(1, grid, grid, width).permute(0, 3, 1, 2).float()

    def interpolate(antialiased: bool) -> Tensor:
        return torch.nn.functional.interpolate(square, size=size, mode=mode, align_corners=False, antialias=antialiased)

    expected = interpolate(antialias)
    if antialias:
        assert (expected - interpolate(False)).abs().max().item() > 1e-2
    expected = expected.to(table.dtype).permute(0, 2, 3, 1).reshape(1, size[0] * size[1], width)
    resized = resample(*size)
    assert resized.dtype == table.dtype
    assert torch.equal(resized, expected)
    assert torch.equal(resample(grid, grid), table)


def reload_without(config: BackboneConfig, directory: Path, key: str) -> tuple[Backbone, Backbone]:
    """Save a randomised backbone of ``config`` to ``directory`` without the weight ``key``, and load it back.

    The load must report exactly ``key`` missing; the caller checks how the loaded model initialised it.

    Returns:
        The saved model and the loaded one.
    """
    from . import edit_checkpoint, randomize_weights_

    model = AutoBackbone.from_config(config)
    randomize_weights_(model)
    model.save_pretrained(directory)

    def drop(state: dict[str, Tensor]) -> None:
        del state[key]

    edit_checkpoint(directory, directory, drop)
    loaded, report = AutoBackbone.from_pretrained(directory, output_loading_info=True)
    assert report.missing_keys == [key]
    return model, loaded


def reinitialised_when_missing(config: BackboneConfig, directory: Path, missing: str, kept: str) -> Tensor:
    """Reload a backbone of ``config`` from a checkpoint without the weight ``missing`` (see :func:`reload_without`).

    Asserts that exactly ``missing`` is reported missing and that ``kept`` (e.g. another parameter of the same
    module) keeps its saved value; the caller checks how ``missing`` was initialised.

    Args:
        config: The config of the saved backbone.
        directory: An empty folder for the checkpoint.
        missing: The key left out of the checkpoint.
        kept: A key whose saved value the loaded model must hold.

    Returns:
        The loaded model's ``missing`` weight, as its initialisation left it.
    """
    import torch

    model, loaded = reload_without(config, directory, missing)
    weights = loaded.state_dict()
    assert torch.equal(weights[kept], model.state_dict()[kept])
    return weights[missing]


def redrawn_when_missing(
    config: BackboneConfig, directory: Path, missing: str, kept: str, *, rel: float = 0.15
) -> Tensor:
    """:func:`reinitialised_when_missing`, and assert that ``missing`` was drawn afresh as transformers draws it.

    Its standard deviation must be the config's ``initializer_range`` (within ``rel``).

    Args:
        config: The config of the saved backbone (with an ``initializer_range``).
        directory: An empty folder for the checkpoint.
        missing: The key left out of the checkpoint.
        kept: A key whose saved value the loaded model must hold.
        rel: The relative tolerance of the standard deviation (wider for a small tensor).

    Returns:
        The loaded model's ``missing`` weight.
    """
    weight = reinitialised_when_missing(config, directory, missing, kept)
    assert weight.std().item() == pytest.approx(config.initializer_range, rel=rel)  # type: ignore[attr-defined]
    return weight


def assert_layer_scaled_init(
    layer: nn.Module, query: nn.Linear, mlp_in: nn.Linear, *, layer_scale: float, std: float = 0.02
) -> None:
    """Assert transformers' fresh init of a DINOv2-style layer (``norm1``, ``attention``, ``layer_scale1``,
    ``norm2``, ``mlp``, ``layer_scale2``).

    Both layer scales hold ``layer_scale``, both norms start at one and zero, ``query``'s bias at zero, and
    ``mlp_in``'s weight is drawn with standard deviation ``std`` (within 15 %).

    Args:
        layer: One transformer layer of a freshly built model.
        query: Its attention's query projection (the fused ``qkv`` where it has one).
        mlp_in: Its MLP's first projection.
        layer_scale: The config's ``layerscale_value``.
        std: The config's ``initializer_range``.
    """
    import torch

    width = query.in_features
    for scale in ("layer_scale1", "layer_scale2"):
        assert torch.equal(layer.get_parameter(f"{scale}.lambda1"), torch.full((width,), layer_scale))
    for norm in ("norm1", "norm2"):
        assert torch.equal(layer.get_parameter(f"{norm}.weight"), torch.ones(width))
        assert torch.equal(layer.get_parameter(f"{norm}.bias"), torch.zeros(width))
    assert torch.equal(query.bias, torch.zeros(query.out_features))
    assert mlp_in.weight.std().item() == pytest.approx(std, rel=0.15)


def assert_model_resamples_positions(
    config: BackboneConfig,
    size: tuple[int, int],
    *,
    antialias: bool,
    prefix_tokens: int = 1,
    dtype: torch.dtype | None = None,
    embeddings: str = "embeddings",
    mode: str = "bicubic",
) -> None:
    """Assert a randomised backbone of ``config`` resamples its own position table as
    :func:`assert_position_resampling` says.

    The table is the ``position_embeddings`` of the submodule ``embeddings``, without its first ``prefix_tokens``
    positions (those of the class tokens); the resampling is that submodule's ``_patch_positions``.

    Args:
        config: The config; its position table is a square grid.
        size: ``(rows, columns)`` resampled to.
        antialias: Whether the resampling antialiases.
        prefix_tokens: The positions of prefix tokens at the start of the table.
        dtype: The dtype the model is cast to first (``None``: float32, as built).
        embeddings: The name of the submodule holding the table (e.g. ``"encoder.embeddings"``).
        mode: The interpolation mode of :func:`torch.nn.functional.interpolate`.
    """
    from . import randomize_weights_

    model = randomize_weights_(AutoBackbone.from_config(config))
    if dtype is not None:
        model = model.to(dtype)
    module = model.get_submodule(embeddings)
    table = cast("Tensor", module.position_embeddings)
    resample = cast("Callable[[int, int], Tensor]", module._patch_positions)
    assert_position_resampling(resample, table[:, prefix_tokens:], size, mode, antialias)
