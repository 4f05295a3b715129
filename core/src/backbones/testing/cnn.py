"""Test helpers of convolutional backbones (public: ``backbones.testing.cnn``).

A convolutional backbone's conformance class declares its config rather than writing ``make_config``, and its
deepest stride rather than an export range::

    from backbones.testing.cnn import TINY_CNN, CNNConformance

    class TestResNetConformance(CNNConformance):
        config_class = ResNetConfig
        config = {**TINY_CNN, "embedding_size": 8, "layer_type": "bottleneck"}
        deepest_stride = 16

Also here:

* the tiny and small stage layouts several CNN tests share (:data:`TINY_CNN`, :data:`SMALL_CNN`);
* a ConvNeXt-style backbone's output norms (:data:`OUTPUT_NORM_KEYS`) and its conformance and parity
  declarations (:class:`ConvNextStyleConformance`, :class:`ConvNextStyleParity`);
* the output-stride rule of a stride-4 stem with four stages (:data:`OUTPUT_STRIDE_REDUCTIONS`,
  :func:`dilated_backbone`) and maps compared with an oracle over several sizes (:func:`assert_same_maps_at_sizes`);
* the folding of every BatchNorm by ``reparameterize()`` (:func:`assert_reparameterize_folds_norms`);
* the saved transformers models that hold a CNN (:func:`save_randomized`; :func:`detr_detector`, on the
  DETR-style head :data:`TINY_DETR_HEAD`; :class:`SavedModelsHoldingBackbone`, their load-by-prefix checks
  declared as a table of :class:`HeldBackbone`);
* a transformers ``config.json`` read and written back (:func:`assert_config_json_round_trips`), and a choice
  field's refusal of an unlisted value (:func:`assert_refuses_unlisted_choice`);
* the expected shapes of a pyramid of maps (:func:`map_shapes`, :func:`assert_map_shapes`), a real-size model built on the meta device with
  transformers' weight shapes (:func:`build_on_meta_like_transformers`, :func:`assert_same_state_shapes`), and
  PP-LCNet-style block lists whose strides halve the height only (:func:`with_height_only_strides`);
* config refusals declared as a table (:class:`ConfigRefusals`), the refusals the stage-list configs share
  (:func:`unknown_activation_refusal`, :func:`uneven_stage_lists_refusal`, :func:`non_positive_depths_refusal`;
  all three: :func:`stage_list_refusals`; :func:`assert_patch_size_must_be_square`), and a bad ``config.json``
  refused with its file named (:func:`assert_config_file_refused`);
* a dilated ConvNeXt-style trunk compared with timm's ``ConvNeXt`` (:func:`timm_convnext_state`,
  :func:`assert_dilation_matches_timm_convnext`).

transformers is imported only inside the functions that need it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

import pytest
import torch
from torch import Tensor, nn

from .. import AutoBackbone, Backbone, BackboneConfig, ConfigError, ReparameterizedError
from . import (
    BackboneConformance,
    TransformersParity,
    assert_nested_checkpoint,
    assert_parity,
    random_pixels,
    randomize_weights_,
)

__all__ = [
    "OUTPUT_NORM_KEYS",
    "OUTPUT_STRIDE_REDUCTIONS",
    "SMALL_CNN",
    "TINY_CNN",
    "TINY_DETR_HEAD",
    "CNNConformance",
    "ConfigRefusals",
    "ConvNextStyleConformance",
    "ConvNextStyleParity",
    "HeldBackbone",
    "SavedModelsHoldingBackbone",
    "assert_config_file_refused",
    "assert_config_json_round_trips",
    "assert_dilation_matches_timm_convnext",
    "assert_patch_size_must_be_square",
    "assert_refuses_unlisted_choice",
    "assert_reparameterize_folds_norms",
    "assert_same_maps_at_sizes",
    "assert_same_state_shapes",
    "build_on_meta_like_transformers",
    "assert_map_shapes",
    "detr_detector",
    "dilated_backbone",
    "map_shapes",
    "non_positive_depths_refusal",
    "save_randomized",
    "stage_list_refusals",
    "timm_convnext_state",
    "uneven_stage_lists_refusal",
    "unknown_activation_refusal",
    "with_height_only_strides",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)
BackboneT = TypeVar("BackboneT", bound=Backbone)

TINY_CNN: Mapping[str, Any] = MappingProxyType({"hidden_sizes": [8, 16, 24], "depths": [1, 1, 2]})
"""Three stages 8, 16 and 24 wide, the last of two blocks: the conformance size of a ResNet-style config
(``hidden_sizes`` and ``depths``). Spread it into a plugin's own: ``{**TINY_CNN, "embedding_size": 8}``."""

SMALL_CNN: Mapping[str, Any] = MappingProxyType({"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1]})
"""Four stages, as real ResNets and ConvNeXts have, still a few thousand parameters: the parity size."""

OUTPUT_STRIDE_REDUCTIONS: Mapping[int, tuple[int, ...]] = MappingProxyType(
    {32: (4, 4, 8, 16, 32), 16: (4, 4, 8, 16, 16), 8: (4, 4, 8, 8, 8)}
)
"""The reductions (stem, then four stages) of a stride-4 stem and four stages that halve the map, per
``output_stride``: dilation replaces each stride that would go past it."""

OUTPUT_NORM_KEYS: tuple[str, ...] = ("hidden_states_norms.{stage}.weight", "hidden_states_norms.{stage}.bias")
"""The keys of a ConvNeXt-style backbone's per-stage output norm, as load-report templates
(:class:`~backbones.testing.TransformersParity` fills ``{stage}``): transformers' checkpoint has one for every
stage, ours only for the selected ones."""

TINY_DETR_HEAD: Mapping[str, Any] = MappingProxyType(
    {
        "encoder_in_channels": [16, 24, 32],
        "encoder_hidden_dim": 16,
        "encoder_ffn_dim": 32,
        "d_model": 16,
        "decoder_ffn_dim": 32,
        "num_queries": 10,
        "num_labels": 3,
        "decoder_layers": 2,
        "num_denoising": 0,
    }
)
"""A tiny hybrid encoder and decoder of a DETR-style detector of transformers (RT-DETR, D-FINE), on a backbone
whose three selected maps are 16, 24 and 32 wide; no denoising queries, so a forward is deterministic."""


class CNNConformance(BackboneConformance):
    """:class:`~backbones.testing.BackboneConformance` of a convolutional backbone whose strided layers pad.

    Its images are 64x64 and 50x38: 50 and 38 are multiples of no stride above 2, so the rounding of every
    strided layer is exercised, and a padded layer of stride ``r`` gives a map ``ceil(size / r)`` wide
    (``spatial_rounding = "ceil"``; a class whose layers drop the remainder sets ``"floor"``). It declares its
    ``config_class`` and ``config`` (see :class:`~backbones.testing.BackboneConformance`).

    A CNN whose padding is static exports at any size: declare its ``deepest_stride`` and the export checks run
    from the smallest size whose every map is 2 pixels or more (``deepest_stride + 1`` when rounding up, twice it
    when rounding down: ``torch.export`` specialises a size of 1, which broadcasts) to 4096. A class that sets
    ``export_range`` itself keeps it.

    Class attributes:
        deepest_stride: The largest reduction of the tested config's maps; ``None``: ``export_range`` as declared.
        image_channels_field: A config list whose first entry is the image's channel count, so that a
            checkpoint loaded for grey images sets it together with ``num_channels`` (HGNetV2's
            ``stem_channels``); ``None``: ``num_channels`` alone.
    """

    input_sizes: ClassVar[tuple[tuple[int, int], ...]] = ((64, 64), (50, 38))
    spatial_rounding: ClassVar[str] = "ceil"
    deepest_stride: ClassVar[int | None] = None
    image_channels_field: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.deepest_stride is not None and "export_range" not in cls.__dict__:
            smallest = cls.deepest_stride + 1 if cls.spatial_rounding == "ceil" else 2 * cls.deepest_stride
            cls.export_range = (smallest, 4096)

    def input_channel_overrides(self, channels: int) -> dict[str, Any]:
        """``num_channels``, and the first entry of ``image_channels_field`` where one is declared."""
        overrides = super().input_channel_overrides(channels)
        if self.image_channels_field is not None:
            overrides[self.image_channels_field] = [channels, *self.config[self.image_channels_field][1:]]
        return overrides


class ConvNextStyleConformance(CNNConformance):
    """:class:`CNNConformance` of a backbone laid out as transformers' ``ConvNextBackbone``, at :data:`TINY_CNN`.

    The patch embedding and the 2x2 downsampling convolutions do not pad: each drops the remainder
    (``spatial_rounding = "floor"``); the deepest stride is 16, so export runs from 32 on.
    """

    spatial_rounding: ClassVar[str] = "floor"
    deepest_stride: ClassVar[int | None] = 16
    config: ClassVar[dict[str, Any]] = dict(TINY_CNN)


class ConvNextStyleParity(TransformersParity):
    """:class:`~backbones.testing.TransformersParity` of a backbone laid out as transformers' ``ConvNextBackbone``
    (a patchify stem, four stages, an output norm per stage), at :data:`SMALL_CNN`.

    Declared here: ``config`` is :data:`SMALL_CNN` with ``num_stages=4`` (lists, not transformers' defaults: in 5.23
    ``ConvNextBackbone(ConvNextConfig())`` raises "can only concatenate list (not "tuple") to list" because the
    default sizes are tuples); 67x45 images, no multiple of any stride, so every unpadded convolution drops a
    remainder; five selections; five hidden states. transformers' checkpoint has an output norm for every stage,
    ours keeps only the selected stages' (:data:`OUTPUT_NORM_KEYS` unused); its task model has none (initialised
    as transformers does: weight 1, bias 0) and a pooled LayerNorm and classifier that a backbone never runs, under
    ``trunk_prefix``. The round trip holds to 1e-5.

    Class attributes:
        trunk_prefix: The task model's attribute holding the trunk (``"convnext"``): the prefix removed from its
            keys, and that of its pooled LayerNorm's.
    """

    config: ClassVar[dict[str, Any]] = {**SMALL_CNN, "num_stages": 4}
    input_sizes: ClassVar[tuple[tuple[int, int], ...]] = ((67, 45),)
    out_indices: ClassVar[tuple[tuple[int, ...], ...]] = ((0, 1, 2, 3, 4), (-1,), (1, 3), (0,), (2, -1))
    backbone_unused_keys: ClassVar[tuple[str, ...]] = OUTPUT_NORM_KEYS
    hidden_state_count: ClassVar[int | None] = 5
    task_missing_keys: ClassVar[tuple[str, ...]] = OUTPUT_NORM_KEYS
    round_trip_tolerance: ClassVar[float] = 1e-5
    trunk_prefix: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.trunk_prefix:
            cls.task_unused_keys = (
                "classifier.bias",
                "classifier.weight",
                f"{cls.trunk_prefix}.layernorm.bias",
                f"{cls.trunk_prefix}.layernorm.weight",
            )
            cls.task_prefix = f"'{cls.trunk_prefix}.' removed"
        super().__init_subclass__(**kwargs)


def dilated_backbone(config: BackboneConfig) -> Backbone:
    """Build a randomised model of ``config`` in eval mode, and check its reductions before any forward.

    Args:
        config: A config of a stride-4 stem and four halving stages with ``output_stride`` set.

    Returns:
        The model, whose reductions are :data:`OUTPUT_STRIDE_REDUCTIONS` of its ``output_stride``.
    """
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    assert isinstance(model, Backbone)
    output_stride: int = getattr(config, "output_stride", 0)
    assert output_stride in OUTPUT_STRIDE_REDUCTIONS, f"output_stride={output_stride}: set 8, 16 or 32 in the config"
    expected = list(OUTPUT_STRIDE_REDUCTIONS[output_stride])
    assert model.reductions == expected, f"reductions {model.reductions}, expected {expected}"
    return model


def assert_same_maps_at_sizes(
    ours: Callable[[Tensor], Sequence[Tensor]],
    reference: Callable[[Tensor], Sequence[Tensor]],
    sizes: Iterable[tuple[int, int]],
    *,
    tolerance: float = 1e-5,
    seed: int = 7,
) -> list[list[Tensor]]:
    """Assert two forwards give the same maps (:func:`~backbones.testing.assert_parity`) on images of each size.

    Args:
        ours: Our model's maps of a batch of images.
        reference: The oracle's maps of the same batch.
        sizes: ``(height, width)`` of each batch (two random images, by
            :func:`~backbones.testing.random_pixels` with ``seed``).
        tolerance: Bound of :func:`~backbones.testing.assert_parity`.
        seed: Seed of the images.

    Returns:
        Our maps at each size, in order, for the caller's shape checks.
    """
    results = []
    for height, width in sizes:
        images = random_pixels(height, width, seed=seed)
        with torch.no_grad():
            maps = list(ours(images))
            assert_parity(maps, reference(images), tolerance)
        results.append(maps)
    return results


def assert_reparameterize_folds_norms(
    model: Backbone,
    norm_types: tuple[type[nn.Module], ...],
    inputs: Sequence[Tensor],
    *,
    tolerance: float = 1e-5,
) -> int:
    """Assert ``reparameterize()`` folds every norm into its convolution and keeps the maps, then refuses to train.

    Args:
        model: A randomised model in eval mode that supports reparameterisation.
        norm_types: The norm classes it folds (``nn.BatchNorm2d``, ``FrozenBatchNorm2d``); none may be left.
        inputs: Batches whose maps must stay the same (:func:`~backbones.testing.assert_parity`).
        tolerance: Bound of :func:`~backbones.testing.assert_parity`.

    Returns:
        The number of norms folded (the count ``reparameterize()`` returns).
    """
    norms = sum(isinstance(module, norm_types) for module in model.modules())
    with torch.no_grad():
        expected = [model(batch).feature_maps for batch in inputs]
    assert model.supports_reparameterize
    assert model.reparameterize() == norms, f"reparameterize() did not report the model's {norms} norms"
    assert not any(isinstance(module, norm_types) for module in model.modules())
    with torch.no_grad():
        for batch, maps in zip(inputs, expected):
            assert_parity(model(batch).feature_maps, maps, tolerance)
    with pytest.raises(ReparameterizedError, match="cannot train; load the checkpoint again"):
        model.train()
    return norms


def save_randomized(model: ModuleT, directory: Path) -> ModuleT:
    """Randomise a model's weights (:func:`~backbones.testing.randomize_weights_`) and save it.

    Args:
        model: A transformers model (or any with ``save_pretrained``), such as a detector holding a backbone.
        directory: Where ``save_pretrained`` writes it.

    Returns:
        The model, in eval mode.
    """
    randomize_weights_(model).eval()
    model.save_pretrained(directory)  # type: ignore[operator]
    return model


def detr_detector(name: str, backbone_config: Any, **settings: Any) -> Any:
    """Build transformers' ``<name>ForObjectDetection`` with the :data:`TINY_DETR_HEAD` on ``backbone_config``.

    Args:
        name: The detector's class prefix in transformers: ``"RTDetr"``, ``"DFine"``.
        backbone_config: The transformers config of its backbone.
        **settings: Detector config fields that replace or add to :data:`TINY_DETR_HEAD`'s.

    Returns:
        The detector, freshly initialised.
    """
    import transformers

    fields = {**copy.deepcopy(dict(TINY_DETR_HEAD)), **settings}
    config = getattr(transformers, f"{name}Config")(backbone_config=backbone_config, **fields)
    return getattr(transformers, f"{name}ForObjectDetection")(config)


def assert_config_json_round_trips(
    config_class: type[BackboneConfig],
    reference_config_class: str,
    fields: Mapping[str, Any],
    out_features: Sequence[str],
    directory: Path,
) -> tuple[BackboneConfig, Any]:
    """Assert our config reads a ``config.json`` that transformers writes, and transformers reads ours back.

    transformers' config of ``fields`` selecting ``out_features`` is saved in ``directory``; ours must load it with
    every field and the selection as saved and no unknown field, and save a ``config.json`` (in
    ``directory / "ours"``) that transformers loads with the same fields, stage names and selection.

    Args:
        config_class: Our config class.
        reference_config_class: transformers' config class, by name.
        fields: Config fields (every one compared on both sides).
        out_features: The saved selection.
        directory: Where both files are written.

    Returns:
        Our config and transformers' config read back, for the caller's own checks.
    """
    import transformers

    reference_class = getattr(transformers, reference_config_class)
    reference_class(**fields, out_features=list(out_features)).save_pretrained(directory)
    config = config_class.from_pretrained(directory)
    assert config.out_features == list(out_features)
    assert config.out_indices == [config.stage_names.index(name) for name in out_features]
    assert {name: getattr(config, name) for name in fields} == dict(fields)
    assert config.unknown_fields() == {}
    config.save_pretrained(directory / "ours")
    back = reference_class.from_pretrained(directory / "ours")
    assert back.stage_names == config.stage_names and back.out_features == list(out_features)
    assert {name: getattr(back, name) for name in fields} == dict(fields)
    return config, back


class HeldBackbone(NamedTuple):
    """A transformers model that holds the backbone, for :class:`SavedModelsHoldingBackbone`.

    Attributes:
        build: Builds the model (fresh weights).
        trunk: The dotted path of the backbone's sub-module in it (``"model.backbone"``).
        prefix: The key prefix of the backbone's weights in its checkpoint.
        out_indices: The selection saved in its backbone config.
        input_sizes: ``(height, width)`` of the compared images.
        min_unused: The least number of its keys outside ``prefix`` (the rest of the model).
        missing_counters: The model froze its BatchNorm, so its checkpoint has no ``num_batches_tracked``
            (passed to :func:`~backbones.testing.assert_nested_checkpoint`: RT-DETR-style detectors).
    """

    build: Callable[[], nn.Module]
    trunk: str
    prefix: str
    out_indices: Sequence[int]
    input_sizes: Sequence[tuple[int, int]]
    min_unused: int
    missing_counters: bool = False


class SavedModelsHoldingBackbone:
    """Load-by-prefix checks of the transformers models that hold a backbone, declared as a table. Subclass it as
    ``Test<Name>HeldBackbone``::

        class TestOCRModels(SavedModelsHoldingBackbone):
            backbone_class = PPLCNetV3Backbone
            models = {"PPOCRV5MobileDet": HeldBackbone(_detector, "model.backbone", "model.backbone.", [2, 3, 4, 5],
                                                        ((640, 640), (64, 48)), 10)}

    Generated check: ``test_saved_model_loads_with_prefix``, per entry of ``models`` (argument ``held_backbone``,
    named by the entry's key): the model is built, randomised and saved (:func:`save_randomized`), and
    :func:`~backbones.testing.assert_nested_checkpoint` loads our ``backbone_class`` from it by the entry's prefix,
    with the entry's selection, unused keys and maps of the entry's sub-module.

    Class attributes:
        backbone_class: The class that must be built.
        models: Case name -> :class:`HeldBackbone`.
    """

    backbone_class: ClassVar[type[Backbone]]
    models: ClassVar[dict[str, HeldBackbone]] = {}

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise the check from the table."""
        if "held_backbone" in metafunc.fixturenames:
            metafunc.parametrize("held_backbone", list(self.models))

    def test_saved_model_loads_with_prefix(self, held_backbone: str, tmp_path: Path) -> None:
        held = self.models[held_backbone]
        model = save_randomized(held.build(), tmp_path)
        assert_nested_checkpoint(
            tmp_path,
            model.get_submodule(held.trunk),
            held.prefix,
            backbone_class=self.backbone_class,
            out_indices=held.out_indices,
            input_sizes=held.input_sizes,
            min_unused=held.min_unused,
            missing_counters=held.missing_counters,
        )


def assert_refuses_unlisted_choice(
    config_class: type[BackboneConfig], field: str, value: str, choices: Sequence[str], default: str
) -> None:
    """Assert a choice field (such as ResNet's ``layer_type``) refuses a value it does not list, naming every choice.

    ``config_class(field=value)`` and an assignment of ``value`` to a default config must both raise a
    :class:`ValueError` saying ``<field> '<value>' is not supported; set <field> to one of [<choices>]``; the
    refused assignment leaves the field at ``default``.

    Args:
        config_class: The config class.
        field: The choice field.
        value: A value it does not list.
        choices: The choices, in the order the message lists them.
        default: The field's default.
    """
    message = re.escape(f"{field} {value!r} is not supported; set {field} to one of {list(choices)!r}")
    with pytest.raises(ValueError, match=message):
        config_class(**{field: value})
    config = config_class()
    with pytest.raises(ValueError, match=message):
        setattr(config, field, value)
    assert getattr(config, field) == default


def map_shapes(
    batch: int, widths: Sequence[int], sides: Sequence[int | tuple[int, int]]
) -> tuple[tuple[int, int, int, int], ...]:
    """The shapes of a pyramid of maps, written as its widths and its sizes rather than one tuple a map.

    Args:
        batch: The batch size of every map.
        widths: Each map's channel count, in order.
        sides: Each map's size: an int for a square map, or ``(height, width)``.

    Returns:
        ``(batch, width, height, width)`` for each map, as ``tuple(fmap.shape)`` reads.

    Raises:
        ValueError: ``widths`` and ``sides`` do not have one entry a map each.
    """
    if len(widths) != len(sides):
        raise ValueError(f"{len(widths)} widths but {len(sides)} sides: give one of each per map")
    sizes = [(side, side) if isinstance(side, int) else side for side in sides]
    return tuple((batch, width, height, across) for width, (height, across) in zip(widths, sizes))


def assert_map_shapes(
    maps: Sequence[Tensor], batch: int, widths: Sequence[int], sides: Sequence[int | tuple[int, int]]
) -> None:
    """Assert the maps have the shapes :func:`map_shapes` gives for ``batch``, ``widths`` and ``sides``.

    Args:
        maps: The maps (feature maps or hidden states), in order.
        batch: The expected batch size.
        widths: The expected channel counts.
        sides: The expected sizes: an int for a square map, or ``(height, width)``.
    """
    shapes = [tuple(fmap.shape) for fmap in maps]
    expected = list(map_shapes(batch, widths, sides))
    assert shapes == expected, f"map shapes {shapes}, expected {expected}"


def assert_same_state_shapes(model: nn.Module, reference: nn.Module) -> dict[str, tuple[int, ...]]:
    """Assert two modules' state dicts hold the same keys with the same shapes (no value is read: meta works).

    Args:
        model: Our module.
        reference: The oracle's module (transformers').

    Returns:
        Our state dict's shapes, by key.
    """
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    theirs = {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()}
    only_ours, only_theirs = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
    assert not only_ours and not only_theirs, f"keys only in ours: {only_ours}; only in the reference: {only_theirs}"
    differing = {key: (shape, theirs[key]) for key, shape in ours.items() if shape != theirs[key]}
    assert not differing, f"(ours, reference) shapes differ: {differing}"
    return ours


def build_on_meta_like_transformers(
    backbone_class: type[BackboneT],
    config_class: type[BackboneConfig],
    fields: Mapping[str, Any],
    image_size: tuple[int, int],
    *,
    batch: int = 1,
) -> tuple[BackboneT, list[Tensor]]:
    """Build a real-size model on the meta device, assert its weights have transformers' shapes, and run it.

    Nothing is allocated: a published size builds and runs in milliseconds. transformers' classes are those named
    as ours (``PPLCNetBackbone``, ``PPLCNetConfig``, ...), built from the same ``fields``.

    Args:
        backbone_class: Our backbone class.
        config_class: Our config class.
        fields: The config fields (for both sides), a selection included.
        image_size: ``(height, width)`` of the empty image batch run through our model.
        batch: Its batch size.

    Returns:
        Our model and its feature maps (meta tensors: their shapes are real).
    """
    import transformers

    with torch.device("meta"):
        model = backbone_class(config_class(**fields))
        reference_config = getattr(transformers, config_class.__name__)(**fields)
        reference = getattr(transformers, backbone_class.__name__)(reference_config)
        maps = list(model(torch.empty(batch, 3, *image_size)).feature_maps)
    assert_same_state_shapes(model, reference)
    return model, maps


def with_height_only_strides(block_configs: Sequence[Sequence[Sequence[Any]]], stages: Iterable[int]) -> list[Any]:
    """A copy of PP-LCNet-style ``block_configs`` whose given stages open with a ``[2, 1]`` stride.

    Each block is ``[kernel_size, in_channels, out_channels, stride, ...]``: the first block of each listed stage
    gets the stride ``[2, 1]``, which halves the height only (the text recognisers' layout).

    Args:
        block_configs: One list of blocks a stage.
        stages: The stages whose first block is changed.

    Returns:
        The new block lists (the input is left alone).
    """
    blocks = [[list(block) for block in stage] for stage in block_configs]
    for stage in stages:
        blocks[stage][0][3] = [2, 1]
    return blocks


def unknown_activation_refusal(listed: str) -> tuple[dict[str, Any], str]:
    """The refusal of ``hidden_act="swishy"`` that lists the supported activations, for :class:`ConfigRefusals`.

    Args:
        listed: One activation the message must list (``"relu"``, ``"gelu"``).

    Returns:
        ``(overrides, message pattern)``.
    """
    return {"hidden_act": "swishy"}, rf"hidden_act 'swishy' is not supported; set hidden_act to one of \[.*'{listed}'"


def uneven_stage_lists_refusal(widths: Sequence[int] = (8, 16)) -> tuple[dict[str, Any], str]:
    """The refusal of two ``hidden_sizes`` for three ``depths``, for :class:`ConfigRefusals`.

    Args:
        widths: The two stage widths (valid on their own, so that only the count is wrong).

    Returns:
        ``(overrides, message pattern)``.
    """
    message = r"hidden_sizes has 2 entries but depths has 3; .*len\(hidden_sizes\) == len\(depths\)"
    return {"hidden_sizes": list(widths), "depths": [1, 1, 1]}, message


def non_positive_depths_refusal(**fields: Any) -> tuple[dict[str, Any], str]:
    """The refusal of ``depths=[1, 0]``, for :class:`ConfigRefusals`.

    Args:
        **fields: Other fields that make the rest valid (``hidden_sizes=[8, 16]``).

    Returns:
        ``(overrides, message pattern)``.
    """
    return {**fields, "depths": [1, 0]}, r"depths must list one positive integer per stage, got \[1, 0\]"


def stage_list_refusals(listed: str) -> tuple[tuple[dict[str, Any], str], ...]:
    """The refusals a config of per-stage lists (``hidden_sizes``, ``depths``) with a ``hidden_act`` shares, for
    :class:`ConfigRefusals`: :func:`unknown_activation_refusal` (listing ``listed``),
    :func:`uneven_stage_lists_refusal` and :func:`non_positive_depths_refusal` (two stages 8 and 16 wide)."""
    return (
        unknown_activation_refusal(listed),
        uneven_stage_lists_refusal(),
        non_positive_depths_refusal(hidden_sizes=[8, 16]),
    )


class ConfigRefusals:
    """Config refusals declared as a table. Subclass it as ``Test<Name>ConfigRefusals``::

        class TestResNetConfigRefusals(ConfigRefusals):
            config_class = ResNetConfig
            refusals = (unknown_activation_refusal("relu"), ({"depths": [1, 0]}, r"depths must list ..."))

    Generated check: ``test_bad_config_names_the_field``, per entry of ``refusals`` (arguments ``overrides`` and
    ``message``): ``config_class(**{**config, **overrides})`` raises ``error`` whose message matches ``message``.

    Class attributes:
        config_class: The config class.
        config: Fields that every case starts from (a valid config).
        refusals: ``(overrides, message pattern)`` per case.
        error: The exception class expected (default :class:`~backbones.ConfigError`, which every config
            validation raises).
    """

    config_class: ClassVar[type[BackboneConfig]]
    config: ClassVar[Mapping[str, Any]] = {}
    refusals: ClassVar[Sequence[tuple[Mapping[str, Any], str]]] = ()
    error: ClassVar[type[Exception]] = ConfigError

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise the check from the table."""
        if "overrides" in metafunc.fixturenames:
            metafunc.parametrize(("overrides", "message"), list(self.refusals))

    def test_bad_config_names_the_field(self, overrides: Mapping[str, Any], message: str) -> None:
        with pytest.raises(self.error, match=message):
            self.config_class(**{**self.config, **overrides})


def assert_patch_size_must_be_square(config_class: type[BackboneConfig]) -> None:
    """Assert a square ``patch_size`` pair is kept as one int and a non-square one is refused with an example.

    Args:
        config_class: A config with a ``patch_size`` field.
    """
    assert getattr(config_class(patch_size=[2, 2]), "patch_size", None) == 2
    message = r"patch_size must be one int or a square pair such as \[4, 4\], got \[2, 4\]"
    with pytest.raises(ValueError, match=message):
        config_class(patch_size=[2, 4])


def assert_config_file_refused(
    config: BackboneConfig, edit: Callable[[dict[str, Any]], None], message: str, directory: Path
) -> None:
    """Assert a ``config.json`` made invalid by hand is refused by ``AutoBackbone.from_pretrained``, naming it.

    Args:
        config: A valid config, saved in ``directory``.
        edit: Changes the saved file's parsed JSON in place, making it invalid.
        message: Pattern of the :class:`~backbones.ConfigError` (which names the file and the field).
        directory: Where the file is written.
    """
    config.save_pretrained(directory)
    path = directory / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        AutoBackbone.from_pretrained(directory)


_TIMM_CONVNEXT_NAMES = MappingProxyType(
    {
        "dwconv": "conv_dw",
        "layernorm": "norm",
        "pwconv1": "mlp.fc1",
        "pwconv2": "mlp.fc2",
        "grn": "mlp.grn",
        "layer_scale_parameter": "gamma",
    }
)


def timm_convnext_state(model: nn.Module) -> dict[str, Tensor]:
    """A ConvNeXt-style trunk's weights under timm's ``ConvNeXt`` names.

    ``embeddings.patch_embeddings`` and ``embeddings.layernorm`` become ``stem.0`` and ``stem.1``; a stage's
    ``downsampling_layer`` its ``downsample``; a block's ``dwconv``, ``layernorm``, ``pwconv1``, ``pwconv2``,
    ``grn`` and ``layer_scale_parameter`` its ``conv_dw``, ``norm``, ``mlp.fc1``, ``mlp.fc2``, ``mlp.grn`` (whose
    parameters timm keeps flat) and ``gamma``. The output norms have no timm counterpart and are left out.

    Args:
        model: Our ConvNeXt or ConvNeXt V2 backbone.

    Returns:
        The state dict to load into timm's ``ConvNeXt``.
    """
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("hidden_states_norms."):
            continue
        if key.startswith("embeddings."):
            layer, parameter = key.removeprefix("embeddings.").split(".", 1)
            state[("stem.0." if layer == "patch_embeddings" else "stem.1.") + parameter] = value
            continue
        _, _, stage, kind, rest = key.split(".", 4)
        if kind == "downsampling_layer":
            state[f"stages.{stage}.downsample.{rest}"] = value
            continue
        block, part, *leaf = rest.split(".")
        name = ".".join([_TIMM_CONVNEXT_NAMES[part], *leaf])
        state[f"stages.{stage}.blocks.{block}.{name}"] = value.reshape(-1) if part == "grn" else value
    return state


def assert_dilation_matches_timm_convnext(config: BackboneConfig, *, seed: int = 7, **timm_options: Any) -> None:
    """Assert a dilated ConvNeXt-style model matches timm's ``ConvNeXt`` of the same ``output_stride`` and weights.

    The model is built by :func:`dilated_backbone`; timm's reductions must be those of our four stages, it must
    load :func:`timm_convnext_state` missing only its classifier head, and give our hidden states after the stem
    on 64x64 and 67x45 images (:func:`assert_same_maps_at_sizes`). Skipped where timm is not installed.

    Args:
        config: A config with ``depths``, ``hidden_sizes`` and ``output_stride``.
        seed: Seed of the images.
        **timm_options: Further arguments of timm's ``ConvNeXt`` (``use_grn=True``, ``ls_init_value=None``).
    """
    pytest.importorskip("timm")
    from timm.models.convnext import ConvNeXt

    fields = config.to_dict()
    model = dilated_backbone(config)
    reference = ConvNeXt(
        depths=fields["depths"], dims=fields["hidden_sizes"], output_stride=fields["output_stride"], **timm_options
    ).eval()
    assert [info["reduction"] for info in reference.feature_info] == model.reductions[1:]
    missing, unexpected = reference.load_state_dict(timm_convnext_state(model), strict=False)
    assert (sorted(missing), unexpected) == (
        ["head.fc.bias", "head.fc.weight", "head.norm.bias", "head.norm.weight"],
        [],
    )
    assert_same_maps_at_sizes(
        lambda images: model(images, output_hidden_states=True).hidden_states[1:],
        lambda images: cast("list[Tensor]", reference.forward_intermediates(images, intermediates_only=True)),
        [(64, 64), (67, 45)],
        seed=seed,
    )
