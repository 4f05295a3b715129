"""Parity tests against transformers: one declaration a plugin, the checks generated from it.

transformers is a test-only oracle: this module imports it inside the functions that need it, never at import.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from .. import AutoBackbone, Backbone, BackboneConfig
from ._declared import declare_checks
from ._tensors import assert_close_maps, compare_maps, feature_map_loss, randomize_weights_
from ._tokens import TokenShapes, patch_token_count

__all__ = [
    "TINY_DETR",
    "RecordedParity",
    "TransformersParity",
    "assert_parity",
    "edit_checkpoint",
    "load_reference",
    "reference_class",
]


TINY_DETR: Mapping[str, Any] = MappingProxyType(
    {
        "d_model": 16,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "num_queries": 5,
        "num_labels": 3,
    }
)
"""transformers' ``DetrConfig`` fields of a tiny DETR transformer (DETR's head, MaskFormer's decoder) on a
backbone under test: one encoder and one decoder layer 16 wide with 2 heads, 5 queries, 3 labels."""


def assert_parity(ours: Sequence[Tensor], reference: Sequence[Tensor], tolerance: float = 1e-4) -> float:
    """Assert two sequences of maps have equal shapes and agree to ``tolerance`` relative to the map's scale.

    The rule, per map: ``max|ours - reference| / max(1, max|reference|) <= tolerance``. It is the absolute
    rule for maps of values up to 1 and a relative one for larger maps (such as gradients of a squared loss),
    whose fp32 rounding grows with their magnitude.

    Returns:
        The largest scaled difference found.
    """
    return compare_maps(ours, reference, tolerance, scaled=True)


def reference_class(name: str) -> Any:
    """The transformers class ``name`` (e.g. ``"ResNetBackbone"``), imported on first use."""
    return getattr(importlib.import_module("transformers"), name)


def load_reference(model_class: str, directory: Path, missing: Iterable[str] = ()) -> Any:
    """``transformers.<model_class>.from_pretrained(directory)`` in eval mode, asserting a clean load.

    The concrete class, not transformers' AutoBackbone: in 5.23 ``AutoBackbone.from_pretrained(local_dir)``
    asks the hub first and fails offline.

    Args:
        model_class: Name of the transformers class.
        directory: The checkpoint folder.
        missing: The keys transformers must report missing (and initialise itself); nothing else may be
            missing, unexpected or of another shape.
    """
    model, info = reference_class(model_class).from_pretrained(directory, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(missing), info
    assert not info["unexpected_keys"] and not info.get("mismatched_keys"), info
    return model.eval()


def edit_checkpoint(source: Path, target: Path, edit: Callable[[dict[str, Tensor]], None]) -> dict[str, Tensor]:
    """Write ``source``'s checkpoint to ``target`` (which may be ``source``) with its weights edited in place.

    Args:
        source: A folder with ``config.json`` and ``model.safetensors``.
        target: The folder to write (created if needed); it gets the same ``config.json``.
        edit: Called with the weights by key; it may add, change or delete entries.

    Returns:
        The edited weights.
    """
    from safetensors.torch import load_file, save_file

    state = load_file(source / "model.safetensors")
    edit(state)
    target.mkdir(parents=True, exist_ok=True)
    if target.resolve() != source.resolve():
        shutil.copyfile(source / "config.json", target / "config.json")
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    return state


def _expand(templates: Iterable[str], stages: Iterable[str]) -> list[str]:
    """Key templates with ``{stage}`` written once per stage name; the others as they are."""
    keys: list[str] = []
    stages = list(stages)
    for template in templates:
        keys.extend(template.format(stage=stage) for stage in stages) if "{stage}" in template else keys.append(
            template
        )
    return sorted(keys)


class TransformersParity:
    """Parity with a transformers oracle, declared once. Subclass it as ``Test<Name>Parity``.

    Every check builds the oracle with :func:`~backbones.testing.randomize_weights_` (every weight and
    BatchNorm statistic), saves or loads a checkpoint the way users do, and compares with
    :func:`assert_parity` at each of ``input_sizes``. Generated checks (the parametrised arguments are named
    ``parity_variant``, ``parity_out_indices``, ``parity_size``, ``task_class``, ``task_variant`` and
    ``round_trip_variant``, so that a subclass's own test methods can take them too):

    * ``test_backbone_checkpoint_matches_transformers``: per variant, selection of ``out_indices`` and input
      size: our model class, the exact load report, the maps, the channels.
    * ``test_hidden_states_match_transformers``: per variant; attentions too with ``compare_attentions``.
    * ``test_task_checkpoint_loads_trunk``: per task class and ``task_variants``: the exact report of a task checkpoint,
      missing weights initialised as transformers initialises them, the maps of transformers' backbone
      holding the same trunk.
    * ``test_our_checkpoint_loads_into_transformers``: per ``round_trip_variants``.
    * ``test_training_gradients_match`` with ``compare_gradients``.
    * ``test_token_and_attention_shapes`` per variant of ``token_shapes`` (argument ``token_variant``).
    * ``test_maps_without_reshape`` with ``unreshaped_out_indices``.
    * ``test_training_step_matches_under_a_seed`` with ``seeded_training_variant``.
    * ``test_transformers_config_json_round_trips`` with ``saved_config_fields``: our config class reads
      transformers' ``config.json`` (those fields with those values) and writes back every key it holds.

    Class attributes:
        backbone_class: Our backbone class (the class ``AutoBackbone`` must build).
        config_class: Our config class (default: ``backbone_class.config_class``).
        reference_config_class: Name of transformers' config class (default: our config class's name).
        reference_backbone_class: Name of transformers' backbone class (default: our backbone class's
            ``reference_class_name``, the name it saves in ``architectures``).
        reference_task_class: Name of a transformers task model whose trunk we load (``""``: no task check).
        reference_task_classes: Several such names, where more than one task model is checked.
        config: Small config arguments shared by every variant (valid for both config classes).
        variants: Name -> config arguments on top of ``config``.
        input_sizes: ``(height, width)`` of the test images; the first is used for hidden states and gradients.
        batch_size: Images per batch.
        seed: Seed of the oracle's random weights.
        reference_out_indices: The selection the oracle checkpoint is saved with (``None``: every stage).
        out_indices: Selections loaded from the oracle checkpoint. The first (say, every stage) is checked
            for every variant, the others for ``selection_variants`` (default: every variant).
        selection_variants: The variants checked with every selection.
        tolerance: Bound of :func:`assert_parity` for maps, hidden states and gradients.
        backbone_unused_keys: Checkpoint keys a backbone checkpoint loads as unused; ``{stage}`` in a key
            stands for each stage not selected.
        backbone_prefix: The exact ``prefix`` note of loading the oracle checkpoint (``None``: not checked).
        hidden_out_indices: The selection of the hidden-state check (its maps are compared too).
        hidden_state_count: How many hidden states both return (``None``: not checked).
        hidden_state_shapes: Their shapes at the first input size (``None``: not checked).
        compare_attentions: Compare attention probabilities (the oracle runs eager attention).
        attention_shapes: Their shapes at the first input size (``None``: not checked).
        attention_tolerance: Bound of :func:`assert_parity` for attention probabilities.
        task_variants: Variants of the task check (default: the first variant).
        task_out_indices: Selection loaded from the task checkpoint.
        task_options: Extra config arguments of the task model.
        task_missing_keys: Exact missing keys of the task check's report (``{stage}``: each selected stage).
        task_unused_keys: Exact unused keys of the task check's report (``{stage}``: each unselected stage).
        task_prefix: The report's exact ``prefix`` note, e.g. ``"'resnet.' removed"`` (``None``: not checked).
        round_trip_variants: Variants saved by us and loaded by transformers (default: every variant).
        round_trip_out_indices: The selection saved by us (non-negative indices).
        round_trip_missing_keys: Keys transformers reports missing from our checkpoint (weights its
            backbone holds but never runs).
        round_trip_tolerance: Bound of :func:`assert_parity` for the round trip.
        reference_reports_channels: transformers' backbone reports the channels of a checkpoint we save.
        compare_gradients: Compare the gradients of a training step on the oracle checkpoint.
        key_renames: ``(pattern, replacement)`` regular expressions, applied in order, that turn our
            parameter names into transformers' in-memory names (for gradients by parameter name).
        gradient_variants: The variants of the gradient check (default: the first variant).
        fused_keys: Part of transformers' name of one of our fused weights (after ``key_renames``) -> the parts
            that name transformers' split weights in its place, whose gradients concatenate to ours in order.
        ungraded_reference_keys: transformers' in-memory names of its weights that are not ours and are not
            unused checkpoint keys either (such as a mask token, saved under another name): exactly these,
            which it must not train either, are left after the gradient check.
        token_shapes: Variant -> the exact hidden-state and attention shapes of its oracle checkpoint at an
            input size (for token models, whose hidden states are sequences; empty: not checked).
        unreshaped_out_indices: The selection of a checkpoint transformers saves with
            ``reshape_hidden_states=False`` (first variant), whose maps must then be token sequences equal to
            transformers' at every input size, of :meth:`unreshaped_map_shape` (``None``: not checked).
        unreshaped_prefix_tokens: The prefix tokens such a map keeps before its patch tokens.
        seeded_training_variant: A variant whose training forward draws random numbers (e.g. augmented
            positions): under one seed ours and transformers' maps agree, under another seed the last map
            moves by more than ``seeded_training_change`` while the stem's does not (``""``: not checked).
        seeded_training_size: The input size of that check (``None``: the first input size).
        seeded_training_change: The least largest change of the last map between two seeds.
        saved_config_fields: Values our config class reads from the ``config.json`` of the first variant's
            oracle checkpoint (empty: not checked).
    """

    config_class: ClassVar[type[BackboneConfig]]
    backbone_class: ClassVar[type[Backbone]]
    reference_config_class: ClassVar[str] = ""
    reference_backbone_class: ClassVar[str] = ""
    reference_task_class: ClassVar[str] = ""
    reference_task_classes: ClassVar[tuple[str, ...]] = ()
    config: ClassVar[dict[str, Any]] = {}
    variants: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    input_sizes: ClassVar[tuple[tuple[int, int], ...]] = ((64, 64),)
    batch_size: ClassVar[int] = 2
    seed: ClassVar[int] = 0
    reference_out_indices: ClassVar[tuple[int, ...] | None] = None
    out_indices: ClassVar[tuple[tuple[int, ...], ...]] = ((-1,),)
    selection_variants: ClassVar[tuple[str, ...] | None] = None
    tolerance: ClassVar[float] = 1e-4
    backbone_unused_keys: ClassVar[tuple[str, ...]] = ()
    backbone_prefix: ClassVar[str | None] = None
    hidden_out_indices: ClassVar[tuple[int, ...]] = (1,)
    hidden_state_count: ClassVar[int | None] = None
    hidden_state_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = None
    compare_attentions: ClassVar[bool] = False
    attention_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = None
    attention_tolerance: ClassVar[float] = 1e-5
    task_variants: ClassVar[tuple[str, ...] | None] = None
    task_out_indices: ClassVar[tuple[int, ...]] = (-1,)
    task_options: ClassVar[dict[str, Any]] = {"num_labels": 5}
    task_missing_keys: ClassVar[tuple[str, ...]] = ()
    task_unused_keys: ClassVar[tuple[str, ...]] = ()
    task_prefix: ClassVar[str | None] = None
    round_trip_variants: ClassVar[tuple[str, ...] | None] = None
    round_trip_out_indices: ClassVar[tuple[int, ...]] = (-1,)
    round_trip_missing_keys: ClassVar[tuple[str, ...]] = ()
    round_trip_tolerance: ClassVar[float] = 1e-4
    reference_reports_channels: ClassVar[bool] = True
    compare_gradients: ClassVar[bool] = False
    key_renames: ClassVar[tuple[tuple[str, str], ...]] = ()
    token_shapes: ClassVar[dict[str, TokenShapes]] = {}
    unreshaped_out_indices: ClassVar[tuple[int, ...] | None] = None
    unreshaped_prefix_tokens: ClassVar[int] = 0
    seeded_training_variant: ClassVar[str] = ""
    seeded_training_size: ClassVar[tuple[int, int] | None] = None
    seeded_training_change: ClassVar[float] = 1e-2
    gradient_variants: ClassVar[tuple[str, ...] | None] = None
    fused_keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    ungraded_reference_keys: ClassVar[tuple[str, ...]] = ()
    saved_config_fields: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Our class names are transformers' unless the declaration says otherwise.
        if getattr(cls, "backbone_class", None) is not None:
            if getattr(cls, "config_class", None) is None:
                cls.config_class = cls.backbone_class.config_class
            cls.reference_config_class = cls.reference_config_class or cls.config_class.__name__
            cls.reference_backbone_class = cls.reference_backbone_class or cls.backbone_class.reference_class_name
        # A check the declaration does not ask for is not there at all (rather than skipped).
        wanted = {
            "test_task_checkpoint_loads_trunk": bool(cls.task_classes()),
            "test_training_gradients_match": cls.compare_gradients,
        }
        declare_checks(cls, TransformersParity, wanted)
        # The token checks: a subclass's own method of the same name is kept whatever it declares.
        declared = {
            "test_token_and_attention_shapes": bool(cls.token_shapes),
            "test_maps_without_reshape": cls.unreshaped_out_indices is not None,
            "test_training_step_matches_under_a_seed": bool(cls.seeded_training_variant),
            "test_transformers_config_json_round_trips": bool(cls.saved_config_fields),
        }
        declare_checks(cls, TransformersParity, declared, keep_own=True)

    @classmethod
    def task_classes(cls) -> tuple[str, ...]:
        """The task models checked: ``reference_task_classes``, else ``reference_task_class`` if set."""
        return cls.reference_task_classes or ((cls.reference_task_class,) if cls.reference_task_class else ())

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise the generated checks (and a subclass's own) from the declaration."""
        names = metafunc.fixturenames
        if "parity_variant" in names and "parity_out_indices" in names:
            cases = [
                pytest.param(variant, list(selection), id=f"{variant}-{list(selection)}")
                for variant in self.variants
                for position, selection in enumerate(self.out_indices)
                if position == 0 or self.selection_variants is None or variant in self.selection_variants
            ]
            metafunc.parametrize(("parity_variant", "parity_out_indices"), cases)
            if "parity_size" in names:
                metafunc.parametrize("parity_size", list(self.input_sizes), ids=lambda size: f"{size[0]}x{size[1]}")
        elif "parity_variant" in names:
            metafunc.parametrize("parity_variant", list(self.variants))
        if "task_class" in names:
            metafunc.parametrize("task_class", list(self.task_classes()))
        if "task_variant" in names:
            metafunc.parametrize("task_variant", list(self.task_variants or list(self.variants)[:1]))
        if "round_trip_variant" in names:
            metafunc.parametrize("round_trip_variant", list(self.round_trip_variants or self.variants))
        if "token_variant" in names:
            metafunc.parametrize("token_variant", list(self.token_shapes))

    # -- building ---------------------------------------------------------------------------------

    def options(self, variant: str, **extra: Any) -> dict[str, Any]:
        """Config arguments of ``variant``: ``config``, then the variant's, then ``extra``."""
        return {**self.config, **self.variants[variant], **extra}

    def reference_config(self, variant: str, **extra: Any) -> Any:
        """transformers' config of ``variant``."""
        return reference_class(self.reference_config_class)(**self.options(variant, **extra))

    def our_config(self, variant: str, **extra: Any) -> BackboneConfig:
        """Our config of ``variant``."""
        return self.config_class(**self.options(variant, **extra))

    def build_reference(self, model_class: str, config: Any) -> Any:
        """transformers' ``model_class`` built from ``config`` (override to work around its init)."""
        return reference_class(model_class)(config)

    def load_reference_checkpoint(self, directory: Path, missing: Iterable[str]) -> Any:
        """A checkpoint we saved, loaded by transformers' backbone (see :func:`load_reference`)."""
        return load_reference(self.reference_backbone_class, directory, missing)

    def prepare_reference(self, model: Any) -> None:
        """Adjust a freshly randomised oracle in place (e.g. push a value past a clamp); nothing by default."""

    def reference_model(self, model_class: str, variant: str, **extra: Any) -> Any:
        """transformers' ``model_class`` of ``variant``, every weight and statistic randomised, in eval mode."""
        model = self.build_reference(model_class, self.reference_config(variant, **extra))
        randomize_weights_(model, seed=self.seed)
        self.prepare_reference(model)
        return model.eval()

    def pixels(self, size: tuple[int, int] | None = None, seed: int = 7) -> Tensor:
        """A batch of random images of ``size`` (default: the first input size)."""
        height, width = size or self.input_sizes[0]
        channels = self.options(next(iter(self.variants))).get("num_channels", 3)
        return torch.randn(self.batch_size, channels, height, width, generator=torch.Generator().manual_seed(seed))

    def reference_checkpoint(self, variant: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
        """The oracle backbone of ``variant`` saved by transformers, and the oracle; cached per class."""
        cache: dict[str, tuple[Path, Any]] = type(self).__dict__.get("_checkpoints") or {}
        type(self)._checkpoints = cache  # type: ignore[attr-defined]
        if variant not in cache:
            extra: dict[str, Any] = {}
            if self.reference_out_indices is not None:
                extra["out_indices"] = list(self.reference_out_indices)
            else:
                stages = reference_class(self.reference_config_class)(**self.options(variant)).stage_names
                extra["out_indices"] = list(range(len(stages)))
            oracle = self.reference_model(self.reference_backbone_class, variant, **extra)
            directory = tmp_path_factory.mktemp(f"{type(self).__name__}-{variant}")
            oracle.save_pretrained(directory)
            cache[variant] = (directory, oracle)
        return cache[variant]

    def reference_maps(self, reference: Any, pixels: Tensor) -> list[Tensor]:
        """The oracle checkpoint's map of every stage, by stage position (its selection is every stage)."""
        return list(reference(pixels).feature_maps)

    def reference_hidden_states(self, output: Any) -> list[Tensor]:
        """The oracle's hidden states in our layout; as they are by default."""
        return list(output.hidden_states)

    def reference_attentions(self, reference: Any, pixels: Tensor) -> list[Tensor]:
        """The oracle's attention probabilities at ``pixels``."""
        with torch.no_grad():
            return list(reference(pixels, output_attentions=True).attentions)

    def expected_backbone_unused(self, variant: str, model: Backbone) -> list[str]:
        """Exact unused keys of loading the oracle checkpoint into ``model`` (see ``backbone_unused_keys``)."""
        return _expand(
            self.backbone_unused_keys, [name for name in model.stage_names if name not in model.out_features]
        )

    def expected_task_report(self, task_class: str, variant: str, model: Backbone) -> tuple[list[str], list[str]]:
        """Exact ``(missing, unused)`` keys of loading the ``task_class`` checkpoint into ``model``."""
        unselected = [name for name in model.stage_names if name not in model.out_features]
        return _expand(self.task_missing_keys, model.out_features), _expand(self.task_unused_keys, unselected)

    def expected_task_prefix(self, task_class: str) -> str | None:
        """The exact ``prefix`` note of loading the ``task_class`` checkpoint (see ``task_prefix``)."""
        return self.task_prefix

    def expected_round_trip_missing(self, variant: str) -> list[str]:
        """Keys transformers reports missing from our checkpoint of ``variant``."""
        return sorted(self.round_trip_missing_keys)

    def reference_name(self, our_name: str) -> str:
        """transformers' in-memory name of our parameter ``our_name`` (see ``key_renames``)."""
        for pattern, replacement in self.key_renames:
            our_name = re.sub(pattern, replacement, our_name)
        return our_name

    def unreshaped_map_shape(self, size: tuple[int, int]) -> tuple[int, ...]:
        """The shape of a map without ``reshape_hidden_states`` at ``size``: by default the batch, the
        ``unreshaped_prefix_tokens`` and one token a patch of the first variant's ``patch_size``, its width."""
        fields = self.our_config(next(iter(self.variants))).to_dict()
        tokens = patch_token_count(size, fields["patch_size"], self.unreshaped_prefix_tokens)
        return (self.batch_size, tokens, fields["hidden_size"])

    # -- generated checks -------------------------------------------------------------------------

    def test_backbone_checkpoint_matches_transformers(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        parity_variant: str,
        parity_out_indices: list[int],
        parity_size: tuple[int, int],
    ) -> None:
        directory, reference = self.reference_checkpoint(parity_variant, tmp_path_factory)
        model, report = AutoBackbone.from_pretrained(
            directory, out_indices=parity_out_indices, output_loading_info=True
        )
        assert type(model) is self.backbone_class
        assert model.out_features == [model.stage_names[index] for index in parity_out_indices]
        assert report.missing_keys == []
        assert report.unused_keys == self.expected_backbone_unused(parity_variant, model)
        if self.backbone_prefix is not None:
            assert report.prefix == self.backbone_prefix
        positions = [index % len(model.stage_names) for index in parity_out_indices]
        pixels = self.pixels(parity_size)
        with torch.no_grad():
            expected = self.reference_maps(reference, pixels)
            ours = model(pixels).feature_maps
        assert len(expected) == len(model.stage_names)
        assert_parity(ours, [expected[position] for position in positions], self.tolerance)
        assert model.channels == [expected[position].shape[1] for position in positions]

    def test_hidden_states_match_transformers(
        self, tmp_path_factory: pytest.TempPathFactory, parity_variant: str
    ) -> None:
        directory, reference = self.reference_checkpoint(parity_variant, tmp_path_factory)
        selection = list(self.hidden_out_indices)
        model = AutoBackbone.from_pretrained(directory, out_indices=selection)
        pixels = self.pixels()
        with torch.no_grad():
            expected = reference(pixels, output_hidden_states=True)
            output = model(pixels, output_hidden_states=True)
        states = self.reference_hidden_states(expected)
        if self.hidden_state_count is not None:
            assert len(output.hidden_states) == len(states) == self.hidden_state_count
        if self.hidden_state_shapes is not None:
            assert [tuple(state.shape) for state in output.hidden_states] == list(self.hidden_state_shapes)
        assert_parity(output.hidden_states, states, self.tolerance)
        with torch.no_grad():
            maps = self.reference_maps(reference, pixels)
        assert_parity(output.feature_maps, [maps[index % len(maps)] for index in selection], self.tolerance)
        if self.compare_attentions:
            if hasattr(reference, "set_attn_implementation"):
                reference.set_attn_implementation("eager")  # sdpa returns no attention probabilities
            probabilities = self.reference_attentions(reference, pixels)
            # Attentions cover every stage whichever stages are selected, as in transformers.
            for stages in (selection, list(reference.out_indices)):
                model.out_indices = stages
                with torch.no_grad():
                    attentions = model(pixels, output_attentions=True).attentions
                if self.attention_shapes is not None:
                    assert [tuple(weights.shape) for weights in attentions] == list(self.attention_shapes)
                assert_parity(attentions, probabilities, self.attention_tolerance)

    def test_task_checkpoint_loads_trunk(self, tmp_path: Path, task_class: str, task_variant: str) -> None:
        task = self.reference_model(task_class, task_variant, **self.task_options)
        task.save_pretrained(tmp_path)
        model, report = AutoBackbone.from_pretrained(
            tmp_path, out_indices=list(self.task_out_indices), output_loading_info=True
        )
        assert type(model) is self.backbone_class
        missing, unused = self.expected_task_report(task_class, task_variant, model)
        assert report.missing_keys == missing
        assert report.unused_keys == unused
        prefix_note = self.expected_task_prefix(task_class)
        if prefix_note is not None:
            assert report.prefix == prefix_note
        # The reference: transformers' backbone holding the task model's trunk, the rest as it initialises it.
        config = self.reference_config(task_variant, out_indices=list(self.task_out_indices))
        reference = self.build_reference(self.reference_backbone_class, config).eval()
        wanted = reference.state_dict()
        # A trunk key is the backbone's own, or has the base-model prefix removed or added.
        prefix = f"{task.base_model_prefix}."
        trunk: dict[str, Tensor] = {}
        for key, value in task.state_dict().items():
            for candidate in (key, key.removeprefix(prefix), prefix + key):
                if candidate in wanted:
                    trunk[candidate] = value
                    break
        result = reference.load_state_dict(trunk, strict=False)
        assert sorted(result.missing_keys) == report.missing_keys and result.unexpected_keys == []
        ours = model.state_dict()
        for key in report.missing_keys:
            assert torch.equal(ours[key], wanted[key]), f"{key} is not initialised as transformers initialises it"
        for size in self.input_sizes:
            pixels = self.pixels(size)
            with torch.no_grad():
                assert_parity(model(pixels).feature_maps, reference(pixels).feature_maps, self.tolerance)

    def test_transformers_config_json_round_trips(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory, _ = self.reference_checkpoint(next(iter(self.variants)), tmp_path_factory)
        saved = json.loads((directory / "config.json").read_text())
        config = self.config_class.from_dict(saved)
        assert {name: getattr(config, name) for name in self.saved_config_fields} == self.saved_config_fields
        written = config.to_dict()
        # Extras and derived values kept.
        assert {key: value for key, value in written.items() if key in saved} == saved

    def test_our_checkpoint_loads_into_transformers(self, tmp_path: Path, round_trip_variant: str) -> None:
        selection = list(self.round_trip_out_indices)
        model = AutoBackbone.from_config(self.our_config(round_trip_variant, out_indices=selection))
        randomize_weights_(model, seed=self.seed)
        model.eval().save_pretrained(tmp_path)
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["architectures"] == [self.reference_backbone_class]
        reference = self.load_reference_checkpoint(tmp_path, self.expected_round_trip_missing(round_trip_variant))
        assert list(reference.out_indices) == [index % len(model.stage_names) for index in selection]
        if self.reference_reports_channels:
            assert list(reference.channels) == model.channels
        for size in self.input_sizes:
            pixels = self.pixels(size)
            with torch.no_grad():
                assert_parity(model(pixels).feature_maps, reference(pixels).feature_maps, self.round_trip_tolerance)

    def test_token_and_attention_shapes(self, tmp_path_factory: pytest.TempPathFactory, token_variant: str) -> None:
        shapes = self.token_shapes[token_variant]
        directory, _ = self.reference_checkpoint(token_variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=[1])
        with torch.no_grad():
            output = model(self.pixels(shapes.size), output_hidden_states=True, output_attentions=True)
        assert [tuple(state.shape) for state in output.hidden_states] == list(shapes.hidden_states)
        assert [tuple(weights.shape) for weights in output.attentions] == list(shapes.attentions)

    def test_maps_without_reshape(self, tmp_path: Path) -> None:
        assert self.unreshaped_out_indices is not None
        selection = list(self.unreshaped_out_indices)
        variant = next(iter(self.variants))
        reference = self.reference_model(
            self.reference_backbone_class, variant, reshape_hidden_states=False, out_indices=selection
        )
        reference.save_pretrained(tmp_path)
        model = AutoBackbone.from_pretrained(tmp_path)
        assert model.config.to_dict()["reshape_hidden_states"] is False
        for size in self.input_sizes:
            pixels = self.pixels(size)
            with torch.no_grad():
                ours, theirs = model(pixels).feature_maps, reference(pixels).feature_maps
            assert [tuple(fmap.shape) for fmap in ours] == [self.unreshaped_map_shape(size)] * len(selection)
            assert_close_maps(ours, theirs, self.tolerance)

    def test_training_step_matches_under_a_seed(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory, reference = self.reference_checkpoint(self.seeded_training_variant, tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory)
        model.out_indices = list(range(len(model.stage_names)))
        model.train()
        pixels = self.pixels(self.seeded_training_size)
        reference.train()
        try:
            with torch.no_grad():
                torch.manual_seed(3)
                ours = model(pixels).feature_maps
                torch.manual_seed(3)
                theirs = reference(pixels).feature_maps
                torch.manual_seed(4)
                other_draw = model(pixels).feature_maps
        finally:
            reference.eval()
        assert_parity(ours, theirs, self.tolerance)
        # Stage 0 (the embeddings) draws nothing; the last stage's output moves with the draw.
        assert torch.equal(other_draw[0], ours[0])
        assert (other_draw[-1] - ours[-1]).abs().max().item() > self.seeded_training_change

    def reference_gradient(self, gradients: dict[str, Tensor | None], our_name: str) -> Tensor:
        """Remove and return from ``gradients`` (transformers' by in-memory name) the gradient of our
        parameter ``our_name``: its weight's, or the concatenation of the split weights ``fused_keys`` names."""
        their_name = self.reference_name(our_name)
        fused = next((part for part in self.fused_keys if part in their_name), None)
        names = (
            [their_name] if fused is None else [their_name.replace(fused, split) for split in self.fused_keys[fused]]
        )
        for name in names:
            assert name in gradients, f"{our_name} ({name}) is not one of transformers' weights"
        parts = [gradients.pop(name) for name in names]
        assert all(part is not None for part in parts), f"{our_name}: transformers' weight has no gradient"
        return torch.cat([part for part in parts if part is not None])

    def test_training_gradients_match(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        for variant in self.gradient_variants or list(self.variants)[:1]:
            directory, reference = self.reference_checkpoint(variant, tmp_path_factory)
            model, report = AutoBackbone.from_pretrained(directory, output_loading_info=True)
            model.train()
            pixels = self.pixels()
            reference.train()
            try:
                for network in (model, reference):
                    network.zero_grad()
                    feature_map_loss(network(pixels).feature_maps).backward()
            finally:
                reference.eval()
            theirs = {name: parameter.grad for name, parameter in reference.named_parameters()}
            for name, parameter in model.named_parameters():
                their_grad = self.reference_gradient(theirs, name)
                assert parameter.grad is not None, f"{name}: no gradient"
                assert_parity([parameter.grad], [their_grad], self.tolerance)
            # Only a weight our backbone does not load (such as a final norm of the pooled path) is left, or one
            # declared in ungraded_reference_keys; transformers trains none of them.
            unloaded = sorted(name for name in theirs if name not in report.unused_keys)
            assert unloaded == sorted(self.ungraded_reference_keys), f"transformers' weights not ours: {unloaded}"
            for name, their_grad in theirs.items():
                assert their_grad is None, f"{name} is trained by transformers but is not one of our weights"


class RecordedParity:
    """Parity with outputs an oracle recorded elsewhere (e.g. in the environment of an older transformers
    release, run as a subprocess). Subclass it as ``Test<Name>RecordedParity`` and implement :meth:`record`.

    The recording is a folder with a subfolder per case. Each holds the oracle's checkpoint as it saved it
    (``config.json``, ``model.safetensors``) and ``expected.safetensors``: ``pixels.<i>`` (input ``i``),
    ``map.<i>.<position>`` (the oracle's maps of input ``i``, every stage it selects), and for input 0
    ``hidden.<j>``, ``attention.<j>`` and ``grad.<our parameter name>`` (of :func:`feature_map_loss` over
    every stage's map). A task case also holds ``info.json`` with ``"trunk"``: the ``missing_keys`` and
    ``unexpected_keys`` of the oracle's backbone loading the task model's trunk; the round-trip case holds
    ``info.json`` with ``"loading"``: the oracle's loading info of the checkpoint we saved.

    Class attributes:
        backbone_class: Our backbone class.
        reference_backbone_class: The oracle's backbone class name (our saved ``architectures``; default: our
            backbone class's ``reference_class_name``).
        backbone_case: The case of a backbone checkpoint saved with every stage selected.
        out_indices: Selections loaded from it.
        backbone_unused_keys: Its unused keys (``{stage}``: each stage not selected).
        hidden_state_shapes: Our hidden states' shapes at input 0 (``None``: not checked).
        attention_shapes: Our attention probabilities' shapes at input 0 (``None``: no attentions recorded).
        compare_gradients: Gradients are recorded for the backbone case.
        task_case: The case of a task checkpoint (``""``: none).
        task_out_indices: Selection loaded from it.
        task_missing_keys: Exact missing keys (``{stage}``: each selected stage).
        task_unused_keys: Exact unused keys.
        task_prefix: The exact ``prefix`` note.
        task_trunk_unexpected_keys: The oracle's unexpected keys when its backbone took the trunk.
        round_trip_case: The case of our checkpoint loaded by the oracle (``""``: none).
        round_trip_source: The folder, in the recording, of that checkpoint of ours.
        tolerance: Bound of :func:`assert_parity` for maps, hidden states and gradients.
        attention_tolerance: Bound of :func:`assert_parity` for attention probabilities.
    """

    backbone_class: ClassVar[type[Backbone]]
    reference_backbone_class: ClassVar[str] = ""
    backbone_case: ClassVar[str] = "backbone"
    out_indices: ClassVar[tuple[tuple[int, ...], ...]] = ((-1,),)
    backbone_unused_keys: ClassVar[tuple[str, ...]] = ()
    hidden_state_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = None
    attention_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = None
    compare_gradients: ClassVar[bool] = True
    task_case: ClassVar[str] = ""
    task_out_indices: ClassVar[tuple[int, ...]] = (-1,)
    task_missing_keys: ClassVar[tuple[str, ...]] = ()
    task_unused_keys: ClassVar[tuple[str, ...]] = ()
    task_prefix: ClassVar[str] = ""
    task_trunk_unexpected_keys: ClassVar[tuple[str, ...]] = ()
    round_trip_case: ClassVar[str] = ""
    round_trip_source: ClassVar[str] = "ours"
    tolerance: ClassVar[float] = 1e-4
    attention_tolerance: ClassVar[float] = 1e-5

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "backbone_class", None) is not None:
            cls.reference_backbone_class = cls.reference_backbone_class or cls.backbone_class.reference_class_name
        wanted = {
            "test_training_gradients_match_recording": cls.compare_gradients,
            "test_task_checkpoint_matches_recording": bool(cls.task_case),
            "test_recording_loaded_our_checkpoint": bool(cls.round_trip_case),
        }
        declare_checks(cls, RecordedParity, wanted)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise the selections of the backbone check."""
        if "parity_out_indices" in metafunc.fixturenames:
            metafunc.parametrize("parity_out_indices", [list(s) for s in self.out_indices], ids=str)

    def record(self, directory: Path) -> Path:
        """Run the oracle once, writing every case under ``directory``; return the recording's folder."""
        raise NotImplementedError("implement record in the RecordedParity subclass")

    def recording(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The recording's folder; made once per class."""
        folder: Path | None = type(self).__dict__.get("_recording")
        if folder is None:
            folder = self.record(tmp_path_factory.mktemp(f"{type(self).__name__}-oracle"))
            type(self)._recording = folder  # type: ignore[attr-defined]
        return folder

    def expected(self, tmp_path_factory: pytest.TempPathFactory, case: str) -> dict[str, Tensor]:
        """The recorded tensors of ``case``."""
        from safetensors.torch import load_file

        return load_file(self.recording(tmp_path_factory) / case / "expected.safetensors")

    @staticmethod
    def maps(expected: dict[str, Tensor], index: int) -> list[Tensor]:
        """The recorded maps of input ``index``, by position."""
        count = sum(1 for key in expected if key.startswith(f"map.{index}."))
        return [expected[f"map.{index}.{position}"] for position in range(count)]

    @staticmethod
    def _inputs(expected: dict[str, Tensor]) -> int:
        return sum(1 for key in expected if key.startswith("pixels."))

    def test_backbone_checkpoint_matches_recording(
        self, tmp_path_factory: pytest.TempPathFactory, parity_out_indices: list[int]
    ) -> None:
        directory = self.recording(tmp_path_factory) / self.backbone_case
        model, report = AutoBackbone.from_pretrained(
            directory, out_indices=parity_out_indices, output_loading_info=True
        )
        assert type(model) is self.backbone_class
        assert report.missing_keys == []
        unselected = [name for name in model.stage_names if name not in model.out_features]
        assert report.unused_keys == _expand(self.backbone_unused_keys, unselected)
        expected = self.expected(tmp_path_factory, self.backbone_case)
        positions = [index % len(model.stage_names) for index in parity_out_indices]
        for index in range(self._inputs(expected)):
            with torch.no_grad():
                maps = model(expected[f"pixels.{index}"]).feature_maps
            reference = self.maps(expected, index)
            assert_parity(maps, [reference[position] for position in positions], self.tolerance)

    def test_hidden_states_match_recording(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        model = AutoBackbone.from_pretrained(self.recording(tmp_path_factory) / self.backbone_case, out_indices=[1])
        expected = self.expected(tmp_path_factory, self.backbone_case)
        attentions = self.attention_shapes is not None
        with torch.no_grad():
            output = model(expected["pixels.0"], output_hidden_states=True, output_attentions=attentions)
        if self.hidden_state_shapes is not None:
            assert [tuple(state.shape) for state in output.hidden_states] == list(self.hidden_state_shapes)
        states = [expected[f"hidden.{j}"] for j in range(sum(1 for key in expected if key.startswith("hidden.")))]
        assert_parity(output.hidden_states, states, self.tolerance)
        if self.attention_shapes is not None:
            assert [tuple(weights.shape) for weights in output.attentions] == list(self.attention_shapes)
            probabilities = [expected[f"attention.{j}"] for j in range(len(self.attention_shapes))]
            assert_parity(output.attentions, probabilities, self.attention_tolerance)

    def test_training_gradients_match_recording(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory = self.recording(tmp_path_factory) / self.backbone_case
        expected = self.expected(tmp_path_factory, self.backbone_case)
        model = AutoBackbone.from_pretrained(directory).train()  # saved with every stage selected
        feature_map_loss(model(expected["pixels.0"]).feature_maps).backward()
        grads = {name: parameter.grad for name, parameter in model.named_parameters()}
        reference = {key.removeprefix("grad."): value for key, value in expected.items() if key.startswith("grad.")}
        assert sorted(reference) == sorted(grads)
        for name, grad in reference.items():
            ours = grads[name]
            assert ours is not None, f"{name}: no gradient"
            assert_parity([ours], [grad], self.tolerance)

    def test_task_checkpoint_matches_recording(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        directory = self.recording(tmp_path_factory) / self.task_case
        model, report = AutoBackbone.from_pretrained(
            directory, out_indices=list(self.task_out_indices), output_loading_info=True
        )
        assert type(model) is self.backbone_class
        assert report.prefix == self.task_prefix
        assert report.missing_keys == _expand(self.task_missing_keys, model.out_features)
        assert report.unused_keys == sorted(self.task_unused_keys)
        # The oracle's backbone held the same trunk, its own missing weights as it initialises them.
        trunk = json.loads((directory / "info.json").read_text())["trunk"]
        assert trunk["missing_keys"] == report.missing_keys
        assert trunk["unexpected_keys"] == list(self.task_trunk_unexpected_keys)
        expected = self.expected(tmp_path_factory, self.task_case)
        with torch.no_grad():
            maps = model(expected["pixels.0"]).feature_maps
        assert_parity(maps, self.maps(expected, 0), self.tolerance)

    def test_recording_loaded_our_checkpoint(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        recording = self.recording(tmp_path_factory)
        info = json.loads((recording / self.round_trip_case / "info.json").read_text())["loading"]
        assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        source = recording / self.round_trip_source
        saved = json.loads((source / "config.json").read_text())
        assert saved["architectures"] == [self.reference_backbone_class]
        model = AutoBackbone.from_pretrained(source)
        assert saved["model_type"] == model.config.model_type
        expected = self.expected(tmp_path_factory, self.round_trip_case)
        with torch.no_grad():
            assert_parity(model(expected["pixels.0"]).feature_maps, self.maps(expected, 0), self.tolerance)
