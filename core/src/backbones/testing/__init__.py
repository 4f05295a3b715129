"""Conformance kit: the tests every backbone plugin runs, ours and third parties'.

Subclass :class:`BackboneConformance` in a plugin's test module, name the subclass ``Test...`` and give it
a small config::

    from backbones.testing import BackboneConformance

    class TestSwinConformance(BackboneConformance):
        config_class = SwinConfig  # its model_type is the tested one
        config = {"embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2], "window_size": 2}

pytest then runs every ``test_*`` method below against it.

A plugin that mirrors a transformers architecture declares its parity tests the same way, with
:class:`TransformersParity` (transformers is needed only by the test run, and imported only when a check
runs)::

    from backbones.testing import TransformersParity

    class TestResNetParity(TransformersParity):
        backbone_class = ResNetBackbone  # transformers' classes have the same names as ours here
        reference_task_class = "ResNetForImageClassification"
        config = {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1]}
        variants = {"basic": {"layer_type": "basic"}, "bottleneck": {"layer_type": "bottleneck"}}
        input_sizes = ((56, 40),)
        out_indices = ((0, 1, 2, 3, 4), (2,), (-1,))
        task_unused_keys = ("classifier.1.bias", "classifier.1.weight")

pytest then checks, per variant, that our model loads transformers' (randomised) backbone checkpoint with the
exact load report and the same maps for each selection, the same hidden states (and attentions), the trunk
of a task checkpoint, and that transformers loads a checkpoint we save. Maps agree when
``max|ours - reference| / max(1, max|reference|) <= 1e-4`` (:func:`assert_parity`).

:class:`RecordedParity` does the same against outputs an oracle recorded in another environment (such as an
older transformers release run in a subprocess).

:class:`ProcessorParity` declares the preprocessing parity of a checkpoint's ``preprocessor_config.json``: loaded
by :class:`~backbones.AutoImageProcessor` as saved and without its ``image_processor_type`` (the processor the
plugin declares for its model type), then run against the transformers processor it names on random images::

    from backbones.testing import ProcessorParity

    class TestPvtV2ProcessorParity(ProcessorParity):
        model_type = "pvt_v2"
        processor_type = "PvtImageProcessor"  # compared with transformers' PvtImageProcessorPil
        preprocessor = {"image_processor_type": "PvtImageProcessor", "size": {"height": 64, "width": 48}}
        expected_shape = (1, 3, 64, 48)

:class:`FixedSizeProcessorParity` is the same for a processor that resizes to the file's ``size``, with the
expected shape read from it. :class:`BitProcessorParity` is the same with the ImageNet ``BitImageProcessor`` file
DINOv2-style checkpoints save; a subclass only names its ``model_type``.

:func:`imagenet_preprocessor` writes out such a file's usual keys (resize bilinearly, rescale by 1/255, normalise
with the ImageNet mean and std) around the ones a checkpoint adds::

    preprocessor = imagenet_preprocessor("PvtImageProcessor", size={"height": 64, "width": 48})

Also exported: :func:`randomize_weights_` (give every parameter and statistic a non-trivial value before
saving a parity checkpoint), :func:`assert_close_maps` (max-abs-diff comparison with a readable failure),
:func:`assert_parity`, :func:`reference_class` and :func:`load_reference` (a transformers class by name, a
checkpoint loaded into one with a clean-load check), :func:`assert_load_report` (our checkpoint loaded, its prefix,
missing and unused keys checked exactly), :func:`random_pixels` and :func:`random_image` (seeded random pixel
tensors, and PIL images for processor tests), :func:`edit_checkpoint` (a saved checkpoint rewritten
with keys added, changed or removed), :func:`assert_random_only_in_training` (dropout and stochastic depth
act in training only), :func:`assert_maps_at_size` (a default-size model's maps, channels and reductions),
:func:`feature_map_loss`, :func:`saved_activation_bytes` and :func:`example_forward_inputs` (example values of
the extra forward inputs a backbone declares), and :func:`assert_nested_checkpoint` (our backbone loaded by its prefix from a
saved detector or other model holding it, the same maps as that sub-model)), and
:func:`assert_frozen_norm_round_trip` (a BatchNorm checkpoint loaded with ``freeze_norm=True`` and saved back
into transformers), :func:`assert_exports_with_dynamic_size` (a model the kit does not build, such as a
reparameterised one, exported with dynamic sizes and to ONNX, against eager),
:func:`assert_cache_follows_weights` (values cached from a weight, such as an attention bias, follow in-place
updates and dtype changes) and :func:`modules_loaded_by` (the modules a snippet loads in a fresh interpreter:
``import backbones`` and a plugin's package must not load torch).

Extra forward inputs: a backbone whose ``forward`` takes more than images (ViTPose's ``dataset_index``)
declares each in :attr:`backbones.Backbone.extra_forward_inputs` as a :class:`backbones.ForwardInput`. Every
check that runs the model (compile, export with dynamic H and W, ONNX, DDP and FSDP2, gradient checkpointing,
bf16, channels_last, determinism, batch independence, ...) then passes their example values; export and ONNX
keep them as static-shape graph inputs. ``test_extra_forward_inputs_are_declared`` fails for a ``forward``
keyword that is not declared, and checks that a required input that is missing is refused by name.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from .. import AutoBackbone, Backbone, BackboneConfig, BackboneOutput, ConfigError, get_registry
from ._caches import assert_cache_follows_weights
from ._config_errors import ConfigErrors
from ._export import assert_exports_with_dynamic_size
from ._frozen import assert_frozen_norm_round_trip
from ._imports import imported_names, modules_loaded_by
from ._inputs import InputConformance
from ._nested import assert_nested_checkpoint
from ._parity import (
    TINY_DETR,
    RecordedParity,
    TransformersParity,
    assert_parity,
    edit_checkpoint,
    load_reference,
    reference_class,
)
from ._pixels import random_image, random_pixels
from ._processing import BitProcessorParity, FixedSizeProcessorParity, ProcessorParity, imagenet_preprocessor
from ._reports import assert_load_report
from ._tensors import (
    assert_close_maps,
    assert_maps_at_size,
    assert_random_only_in_training,
    example_forward_inputs,
    feature_map_loss,
    randomize_weights_,
    saved_activation_bytes,
)
from ._tokens import TokenShapes, patch_token_count
from ._training import TrainingConformance

__all__ = [
    "TINY_DETR",
    "BackboneConformance",
    "BitProcessorParity",
    "ConfigErrors",
    "FixedSizeProcessorParity",
    "ProcessorParity",
    "RecordedParity",
    "TokenShapes",
    "TransformersParity",
    "assert_cache_follows_weights",
    "assert_close_maps",
    "assert_exports_with_dynamic_size",
    "assert_frozen_norm_round_trip",
    "assert_load_report",
    "assert_maps_at_size",
    "assert_nested_checkpoint",
    "assert_parity",
    "assert_random_only_in_training",
    "edit_checkpoint",
    "example_forward_inputs",
    "feature_map_loss",
    "imagenet_preprocessor",
    "imported_names",
    "load_reference",
    "modules_loaded_by",
    "patch_token_count",
    "random_image",
    "random_pixels",
    "randomize_weights_",
    "reference_class",
    "saved_activation_bytes",
]


_STANDARD_FORWARD_ARGUMENTS = frozenset(
    {"pixel_values", "output_hidden_states", "output_attentions", "return_dict", "output_prefix_tokens"}
)
"""The keywords of :meth:`backbones.Backbone.forward` itself; others must be declared extra inputs."""


def _labelled(name: str) -> Callable[[str], str]:
    return lambda message: f"{name}: {message}"


class BackboneConformance(TrainingConformance, InputConformance):
    """Contract tests for one backbone plugin. Subclass it as ``Test<Name>Conformance``.

    Class attributes:
        config_class: The config class of the tested model; ``make_config`` builds it from ``config``, the
            overrides replacing its entries. A class that writes its own ``make_config`` may leave it unset.
        config: Its small config arguments.
        model_type: The registered model type (default: ``config_class``'s).
        input_sizes: Two or more ``(height, width)`` sizes; use sizes the architecture supports.
        spatial_rounding: ``"ceil"`` if a stage of stride ``r`` is ``ceil(size / r)`` wide (padding
            backbones), ``"floor"`` if ``size // r``.
        batch_size: Batch size of the test inputs.
        grad_exempt: Names of parameters that get no gradient by design (document why in the plugin).
        export_range: ``(min, max)`` input height and width over which ``torch.export`` and ONNX
            export must hold with dynamic sizes (default: from twice the deepest stride to 256).
        export_multiple: Input sizes must be multiples of this for export (1: any size).
        bf16_tolerance: Largest relative error (``||bf16 - fp32|| / ||fp32||`` per map) allowed under
            bfloat16 autocast.
        deployment_checks: Have the distributed, export and ONNX checks (slow). A variant whose code
            paths another conformance class of the same plugin already covers may switch them off;
            its class then does not have those checks at all.
        limitations: Modes the architecture cannot support, mapped to the reason (from its math). Each
            is then an expected failure: the check must still fail (strict), so a limitation that
            stops being one is noticed. Modes: ``"gradient_checkpointing"``, ``"freeze_stages"``,
            ``"compile"``, ``"export"``, ``"onnx"``, ``"bf16"``, ``"channels_last"``, ``"distributed"``.
        channel_error_name: How the model names itself in its error for images of the wrong channel count
            (``pixel_values has 1 channels but this <name> expects 3 (config.num_channels)``); ``None``:
            not checked.
        bad_config_value: ``(field, value, message)``: a saved ``config.json`` with ``field`` set to
            ``value`` must fail to load with a :class:`~backbones.ConfigError` naming the file and matching
            ``message`` (a regular expression); ``None``: not checked.
    """

    config_class: ClassVar[type[BackboneConfig]]
    config: ClassVar[Mapping[str, Any]] = {}
    model_type: ClassVar[str] = ""
    input_sizes: ClassVar[tuple[tuple[int, int], ...]] = ((64, 64), (96, 80))
    spatial_rounding: ClassVar[str] = "ceil"
    batch_size: ClassVar[int] = 2
    grad_exempt: ClassVar[tuple[str, ...]] = ()
    export_range: ClassVar[tuple[int, int] | None] = None
    export_multiple: ClassVar[int] = 1
    bf16_tolerance: ClassVar[float] = 0.05
    deployment_checks: ClassVar[bool] = True
    limitations: ClassVar[dict[str, str]] = {}
    channel_error_name: ClassVar[str | None] = None
    bad_config_value: ClassVar[tuple[str, Any, str] | None] = None

    _DEPLOYMENT_CHECKS: ClassVar[tuple[str, ...]] = (
        "test_export_with_dynamic_size",
        "test_onnx_export_matches_eager",
        "test_distributed_training_ddp_and_fsdp2",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.model_type and hasattr(cls, "config_class"):
            cls.model_type = cls.config_class.model_type
        # A variant that switches the slow checks off does not have them (rather than skipping them); the
        # same for a check whose declaration is missing.
        wanted = {name: cls.deployment_checks for name in cls._DEPLOYMENT_CHECKS}
        wanted["test_wrong_channel_count_is_explained"] = cls.channel_error_name is not None
        wanted["test_bad_config_file_names_the_file_and_field"] = cls.bad_config_value is not None
        for name, on in wanted.items():
            if not on:
                setattr(cls, name, None)
            elif getattr(cls, name) is None:
                setattr(cls, name, getattr(BackboneConformance, name))

    def make_config(self, **overrides: Any) -> BackboneConfig:
        """A small config of this plugin's architecture: ``config_class(**{**config, **overrides})``."""
        if not hasattr(self, "config_class"):
            raise NotImplementedError(f"{type(self).__name__}: set config_class (and config), or write make_config")
        return self.config_class(**{**self.config, **overrides})

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def first_selectable(self) -> int:
        """The model class's :attr:`~backbones.Backbone.first_selectable_stage` (0: every stage can be output)."""
        model_class = get_registry().get(self.model_type).load_model_class()
        return int(getattr(model_class, "first_selectable_stage", 0))

    def build(self, seed: int = 0, **overrides: Any) -> Backbone:
        """A randomly initialised model in eval mode, every selectable stage selected unless overridden."""
        torch.manual_seed(seed)
        config = self.make_config(**overrides)
        if "out_indices" not in overrides and "out_features" not in overrides:
            config.out_indices = list(range(self.first_selectable, len(config.stage_names)))
        model = AutoBackbone.from_config(config)
        randomize_weights_(model, seed)
        return model.eval()

    def inputs(self, size: tuple[int, int] | None = None, seed: int = 1) -> Tensor:
        height, width = size or self.input_sizes[0]
        channels = getattr(self.make_config(), "num_channels", 3)
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(self.batch_size, channels, height, width, generator=generator)

    def extra_inputs(self, model: Backbone, pixels: Tensor) -> dict[str, Tensor]:
        """Example values of the inputs ``model`` declares in ``extra_forward_inputs``, for ``pixels``' batch."""
        return example_forward_inputs(model, pixels.shape[0])

    def run(self, model: Backbone, pixels: Tensor, *, via: Callable[..., Any] | None = None, **options: Any) -> Any:
        """``model(pixels, **options)`` with example values of the model's declared extra forward inputs.

        Args:
            model: The backbone (its declaration and config give the extra inputs).
            pixels: The images.
            via: What to call instead of ``model`` (its compiled or exported form).
            options: Further keyword arguments of ``forward``.
        """
        return (model if via is None else via)(pixels, **self.extra_inputs(model, pixels), **options)

    def baseline_maps(self) -> tuple[Backbone, Tensor, tuple[Tensor, ...]]:
        """A model from :meth:`build`, pixels from :meth:`inputs` and the model's feature maps of them (without
        gradients): what a check compares the same model's maps under other settings with."""
        model, pixels = self.build(), self.inputs()
        with torch.no_grad():
            return model, pixels, self.run(model, pixels).feature_maps

    def extra_input_sets(self, model: Backbone, pixels: Tensor) -> list[dict[str, Tensor]]:
        """The example extra inputs, and (where there are any) the same with the batch order reversed: an
        exported graph must take them as inputs, not as constants traced from the first example."""
        extras = self.extra_inputs(model, pixels)
        if not extras:
            return [extras]
        return [extras, {name: value.flip(0) for name, value in extras.items()}]

    def expected_size(self, size: int, reduction: int) -> int:
        return math.ceil(size / reduction) if self.spatial_rounding == "ceil" else size // reduction

    def expect_support(self, request: pytest.FixtureRequest, mode: str) -> None:
        """Mark the running check as an expected (strict) failure if ``mode`` is a declared limitation."""
        reason = self.limitations.get(mode)
        if reason:
            request.node.add_marker(pytest.mark.xfail(reason=f"{mode}: {reason}", strict=True))

    def train_step_gradients(self, model: Backbone, pixels: Tensor) -> dict[str, Tensor]:
        """Gradients of a loss over every feature map, by parameter name."""
        model.zero_grad(set_to_none=True)
        feature_map_loss(self.run(model, pixels).feature_maps).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    # -- registry and config ----------------------------------------------------------------------

    def test_registered_under_model_type(self) -> None:
        config = self.make_config()
        assert config.model_type == self.model_type
        registration = get_registry().get(self.model_type)
        assert registration.load_config_class() is type(config)
        model_class = registration.load_model_class()
        assert issubclass(model_class, Backbone)
        assert model_class.config_class is type(config)

    def test_bad_config_file_names_the_file_and_field(self, tmp_path: Path) -> None:
        assert self.bad_config_value is not None
        field, value, message = self.bad_config_value
        self.make_config().save_pretrained(tmp_path)
        path = tmp_path / "config.json"
        data = json.loads(path.read_text())
        assert field in data, f"{field} is not a field of the saved config"
        data[field] = value
        path.write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=rf"invalid backbone config in .*config\.json: .*{message}"):
            AutoBackbone.from_pretrained(tmp_path)

    def test_default_selection_is_last_stage(self) -> None:
        config = self.make_config()
        assert config.out_features == [config.stage_names[-1]]
        # [-1] is the timm wrapper's default, as transformers' TimmBackboneConfig's.
        assert config.out_indices in ([len(config.stage_names) - 1], [-1])

    def test_config_round_trip(self, tmp_path: Path) -> None:
        config = self.make_config(out_indices=[1, -1])
        data = config.to_dict()
        assert data["model_type"] == self.model_type
        assert data["stage_names"] == config.stage_names
        data["id2label"] = {"0": "cat"}
        data["architectures"] = ["SomeForImageClassification"]
        restored = type(config).from_dict(data)
        assert restored.to_dict() == data
        restored.save_pretrained(tmp_path)
        again = type(config).from_pretrained(tmp_path)
        assert again == restored
        assert again.to_dict()["id2label"] == {"0": "cat"}

    def test_assigning_out_features_realigns(self) -> None:
        model = self.build()
        names = model.stage_names
        model.out_features = [names[1], names[-1]]
        assert model.out_indices == [1, len(names) - 1]
        assert model.config.out_indices == [1, len(names) - 1]
        first = self.first_selectable
        model.out_indices = (first, -1)
        assert model.out_features == [names[first], names[-1]]
        with pytest.raises(ValueError, match="valid stage names"):
            model.out_features = ["no-such-stage"]
        assert model.out_features == [names[first], names[-1]], "a refused selection leaves the old one"

    def test_unexposed_stages_are_refused(self) -> None:
        first = self.first_selectable
        names = self.make_config().stage_names
        if not first:
            self.build(out_indices=[0])  # every stage can be selected
            return
        hidden = names[:first]
        with pytest.raises(ValueError, match=rf"cannot output \[{re.escape(repr(hidden[0]))}\]"):
            self.build(out_indices=[0])
        with pytest.raises(ValueError, match="select from"):
            self.build(out_features=[hidden[-1], names[-1]])
        model = self.build()
        with pytest.raises(ValueError, match="are not exposed"):
            model.out_indices = [0, -1]
        with pytest.raises(ValueError, match="are not exposed"):
            model.out_features = [hidden[0]]
        assert model.out_features == names[first:], "a refused selection leaves the old one"

    # -- metadata against outputs -----------------------------------------------------------------

    def test_metadata_matches_outputs(self) -> None:
        assert len(self.input_sizes) >= 2, "check metadata at two input sizes at least"
        model = self.build()
        assert len(model.num_features) == len(model.stage_names) == len(model.reductions)
        assert model.out_feature_channels == dict(zip(model.stage_names, model.num_features))
        assert model.channels == model.num_features[self.first_selectable :]
        for size in self.input_sizes:
            with torch.no_grad():
                maps = self.run(model, self.inputs(size)).feature_maps
            first = self.first_selectable
            assert len(maps) == len(model.stage_names) - first
            stages = zip(model.stage_names[first:], maps, model.num_features[first:], model.reductions[first:])
            for name, fmap, channels, reduction in stages:
                expected = (
                    self.batch_size,
                    channels,
                    self.expected_size(size[0], reduction),
                    self.expected_size(size[1], reduction),
                )
                assert tuple(fmap.shape) == expected, f"stage {name} at input {size}: {tuple(fmap.shape)} != {expected}"
                assert torch.isfinite(fmap).all(), f"stage {name} has non-finite values"

    def test_channels_follow_selection(self) -> None:
        model = self.build(out_indices=[-1])
        assert model.channels == [model.num_features[-1]]
        assert model.out_reductions == [model.reductions[-1]]
        with torch.no_grad():
            (fmap,) = self.run(model, self.inputs()).feature_maps
        assert fmap.shape[1] == model.channels[0]

    # -- forward contract -------------------------------------------------------------------------

    def test_output_forms_agree(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            as_dict = self.run(model, pixels)
            as_tuple = self.run(model, pixels, return_dict=False)
        assert isinstance(as_dict, BackboneOutput)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
        assert_close_maps(as_tuple[0], as_dict.feature_maps, atol=0.0)
        assert_close_maps(as_dict["feature_maps"], as_dict[0], atol=0.0)
        assert as_dict.hidden_states is None and as_dict.attentions is None

    def test_hidden_states_on_request(self) -> None:
        model = self.build(out_indices=[1])
        with torch.no_grad():
            output = self.run(model, self.inputs(), output_hidden_states=True)
            as_tuple = self.run(model, self.inputs(), output_hidden_states=True, return_dict=False)
        assert output.hidden_states is not None and len(output.hidden_states) >= len(model.stage_names)
        assert all(isinstance(state, Tensor) for state in output.hidden_states)
        assert len(as_tuple) == 2 and len(as_tuple[1]) == len(output.hidden_states)

    def test_attentions_on_request(self) -> None:
        model = self.build()
        pixels = self.inputs()
        if model.has_attentions:
            with torch.no_grad():
                output = self.run(model, pixels, output_attentions=True)
            assert output.attentions is not None and len(output.attentions) > 0
            assert all(isinstance(weights, Tensor) and torch.isfinite(weights).all() for weights in output.attentions)
        else:
            with pytest.raises(ValueError, match="output_attentions"):
                self.run(model, pixels, output_attentions=True)
        with torch.no_grad():
            filtered = model.forward_with_filtered_kwargs(
                pixels, output_attentions=False, unknown_option=1, **self.extra_inputs(model, pixels)
            )
        assert isinstance(filtered, BackboneOutput)
        assert len(filtered.feature_maps) == len(model.stage_names) - self.first_selectable

    def test_prefix_tokens_on_request(self) -> None:
        model = self.build(out_indices=[1, -1])
        pixels = self.inputs()
        count = model.num_prefix_tokens
        if not count:
            with pytest.raises(ValueError, match="output_prefix_tokens=True cannot be honoured"):
                self.run(model, pixels, output_prefix_tokens=True)
            with pytest.raises(ValueError, match="config.output_prefix_tokens=True cannot be honoured"):
                self.build(output_prefix_tokens=True)
            with torch.no_grad():
                filtered = model.forward_with_filtered_kwargs(
                    pixels, output_prefix_tokens=True, **self.extra_inputs(model, pixels)
                )
            assert isinstance(filtered, BackboneOutput) and filtered.prefix_tokens is None
            return
        with torch.no_grad():
            plain = self.run(model, pixels)
            output = self.run(model, pixels, output_prefix_tokens=True)
            as_tuple = self.run(model, pixels, output_prefix_tokens=True, return_dict=False)
        assert plain.prefix_tokens is None and "prefix_tokens" not in plain.keys()
        assert_close_maps(output.feature_maps, plain.feature_maps, atol=0.0)
        assert output.prefix_tokens is not None and len(output.prefix_tokens) == len(model.out_features)
        for name, tokens, channels in zip(model.out_features, output.prefix_tokens, model.channels):
            expected = (self.batch_size, count, channels)
            assert tuple(tokens.shape) == expected, f"prefix tokens of {name}: {tuple(tokens.shape)} != {expected}"
            assert torch.isfinite(tokens).all()
        assert len(as_tuple) == 2
        assert_close_maps(as_tuple[1], output.prefix_tokens, atol=0.0)
        # Tokens differ between stages (they are each stage's own, not one stage's copied).
        assert not torch.equal(output.prefix_tokens[0], output.prefix_tokens[1])
        configured = self.build(out_indices=[1, -1], output_prefix_tokens=True)
        with torch.no_grad():
            assert_close_maps(self.run(configured, pixels).prefix_tokens, output.prefix_tokens, atol=0.0)

    def test_wrong_channel_count_is_explained(self) -> None:
        assert self.channel_error_name is not None
        model = self.build()
        channels = self.inputs().shape[1]
        wrong = 1 if channels != 1 else 3
        message = (
            rf"pixel_values has {wrong} channels but this {re.escape(self.channel_error_name)} expects "
            rf"{channels} \(config\.num_channels\)"
        )
        with pytest.raises(ValueError, match=message):
            self.run(model, torch.zeros(1, wrong, *self.input_sizes[0]))

    def test_rejects_non_image_input(self) -> None:
        model = self.build()
        with pytest.raises(ValueError, match="4-D"):
            self.run(model, self.inputs()[0])

    def test_extra_forward_inputs_are_declared(self) -> None:
        """Every keyword of ``forward`` beyond the standard ones is declared in ``extra_forward_inputs`` (so the
        kit, and users' tools, can pass it), every declaration is a keyword of ``forward``, its examples are
        accepted, and a required one that is missing is refused with an error naming it."""
        model = self.build()
        declared = [spec.name for spec in model.extra_forward_inputs]
        assert len(set(declared)) == len(declared), f"extra_forward_inputs declares a name twice: {declared}"
        parameters = inspect.signature(model.forward).parameters
        keywords = [
            name
            for name, parameter in parameters.items()
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        ]
        undeclared = [name for name in keywords if name not in _STANDARD_FORWARD_ARGUMENTS and name not in declared]
        assert not undeclared, (
            f"{type(model).__name__}.forward takes {undeclared}, which extra_forward_inputs does not declare; declare "
            "each as a backbones.ForwardInput(name, dtype, shape, examples) so that the kit can pass it"
        )
        unknown = [name for name in declared if name not in keywords]
        assert not unknown, (
            f"extra_forward_inputs declares {unknown}, but {type(model).__name__}.forward has no such keyword"
        )
        pixels = self.inputs()
        with torch.no_grad():
            self.run(model, pixels)
            for spec in model.extra_forward_inputs:
                if not spec.is_required(model.config):
                    continue
                others = {name: value for name, value in self.extra_inputs(model, pixels).items() if name != spec.name}
                with pytest.raises(ValueError, match=re.escape(spec.name)):
                    model(pixels, **others)

    def test_deterministic_in_eval_mode(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            first = self.run(model, pixels).feature_maps
            second = self.run(model, pixels).feature_maps
        assert_close_maps(first, second, atol=0.0)

    def test_batch_items_are_independent(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            batched = self.run(model, pixels).feature_maps
            extras = {name: value[1:2] for name, value in self.extra_inputs(model, pixels).items()}
            single = model(pixels[1:2], **extras).feature_maps
        assert_close_maps([fmap[1:2] for fmap in batched], single, atol=1e-4)

    def test_compiles_as_one_graph(self, request: pytest.FixtureRequest) -> None:
        import torch._dynamo

        self.expect_support(request, "compile")
        model = self.build(out_indices=[1, -1])
        pixels = self.inputs()
        torch._dynamo.reset()
        with torch.no_grad():
            explanation = self.run(model, pixels, via=torch._dynamo.explain(model))
        assert explanation.graph_break_count == 0, f"graph breaks: {explanation.break_reasons}"
        assert explanation.graph_count == 1
        if model.num_prefix_tokens:
            torch._dynamo.reset()
            with torch.no_grad():
                explanation = self.run(model, pixels, via=torch._dynamo.explain(model), output_prefix_tokens=True)
            assert explanation.graph_break_count == 0, f"graph breaks with prefix tokens: {explanation.break_reasons}"
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        with torch.no_grad():
            assert_close_maps(
                self.run(model, pixels, via=compiled).feature_maps, self.run(model, pixels).feature_maps, atol=1e-5
            )
            model.out_indices = [self.first_selectable]
            (fmap,) = self.run(model, pixels, via=compiled).feature_maps
        assert fmap.shape[1] == model.num_features[self.first_selectable], "a new selection is honoured after compiling"

    # -- truncation -------------------------------------------------------------------------------

    def test_truncated_forward_equals_full_forward(self) -> None:
        full = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            reference = self.run(full, pixels).feature_maps
        first = self.first_selectable
        for index in range(first, len(full.stage_names)):
            model = self.build(out_indices=[index])
            model.load_state_dict(full.state_dict(), strict=False)
            with torch.no_grad():
                (fmap,) = self.run(model, pixels).feature_maps
            assert_close_maps([fmap], [reference[index - first]], atol=0.0)

    def test_pruning_frees_deeper_stages(self) -> None:
        model = self.build(out_indices=[1])
        pixels = self.inputs()
        with torch.no_grad():
            before = self.run(model, pixels).feature_maps
        count = sum(p.numel() for p in model.parameters())
        pruned = model.prune_unused_stages()
        assert pruned == model.stage_names[2:]
        if pruned:
            assert sum(p.numel() for p in model.parameters()) < count
            with pytest.raises(ValueError, match="pruned"):
                model.out_indices = [-1]
        with torch.no_grad():
            after = self.run(model, pixels).feature_maps
        assert_close_maps(after, before, atol=0.0)

    # -- training ---------------------------------------------------------------------------------

    def test_every_parameter_gets_a_gradient(self) -> None:
        model = self.build().train()
        feature_map_loss(self.run(model, self.inputs()).feature_maps).backward()
        missing = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad and p.grad is None and name not in self.grad_exempt
        ]
        assert not missing, f"parameters without a gradient (unused in forward): {missing}"
        bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients: {bad}"

    def test_gradient_checkpointing_gives_same_gradients(self, request: pytest.FixtureRequest) -> None:
        self.expect_support(request, "gradient_checkpointing")
        model = self.build().train()
        pixels = self.inputs()
        reference = self.train_step_gradients(model, pixels)
        stored = saved_activation_bytes(model, pixels, **self.extra_inputs(model, pixels))
        assert not model.is_gradient_checkpointing
        model.gradient_checkpointing_enable()
        assert model.is_gradient_checkpointing
        checkpointed = self.train_step_gradients(model, pixels)
        assert checkpointed.keys() == reference.keys()
        for name, grad in reference.items():
            torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-5, msg=_labelled(name))
        with_checkpointing = saved_activation_bytes(model, pixels, **self.extra_inputs(model, pixels))
        assert with_checkpointing < stored, (
            f"gradient checkpointing is on but the forward still stores {with_checkpointing} bytes for backward "
            f"(off: {stored})"
        )
        model.gradient_checkpointing_disable()
        assert not model.is_gradient_checkpointing
        assert saved_activation_bytes(model, pixels, **self.extra_inputs(model, pixels)) == stored

    def test_freeze_stages(self, request: pytest.FixtureRequest) -> None:
        self.expect_support(request, "freeze_stages")
        model = self.build()
        names = model.stage_names
        owners: dict[int, int] = {}
        for position in range(len(names)):
            for module in model._stage_modules(position):
                for parameter in module.parameters():
                    assert owners.setdefault(id(parameter), position) == position, (
                        f"a parameter of stage {names[position]} also belongs to stage {names[owners[id(parameter)]]}"
                    )
        for num_stages in (1, 2):
            model = self.build()
            assert model.freeze_stages(num_stages) == names[:num_stages]
            assert model.frozen_stages == names[:num_stages]
            frozen = {
                id(p) for position in range(num_stages) for m in model._stage_modules(position) for p in m.parameters()
            }
            assert frozen, f"stages {names[:num_stages]} own no parameters"
            model.train()
            for position in range(len(names)):
                for module in model._stage_modules(position):
                    assert all(not m.training for m in module.modules()) == (position < num_stages)
            pixels = self.inputs()
            with torch.no_grad():
                before = self.run(model, pixels, output_hidden_states=True).hidden_states
            grads = self.train_step_gradients(model, pixels)
            for name, parameter in model.named_parameters():
                if id(parameter) in frozen:
                    assert not parameter.requires_grad and name not in grads, f"{name} is frozen but trained"
                elif name not in self.grad_exempt:
                    assert name in grads, f"{name} is not frozen but got no gradient"
            with torch.no_grad():
                for parameter in model.parameters():
                    if parameter.grad is not None:
                        parameter.sub_(0.1 * parameter.grad)
                after = self.run(model, pixels, output_hidden_states=True).hidden_states
            # Hidden states are the stages' own outputs (before any per-output module, which stays trainable).
            assert_close_maps(after[:num_stages], before[:num_stages], atol=0.0)
        model.freeze_stages(0)
        assert model.frozen_stages == [] and all(p.requires_grad for p in model.parameters())
        with pytest.raises(ValueError, match="num_stages"):
            model.freeze_stages(len(names) + 1)

    def test_frozen_batch_norm_keeps_statistics(self) -> None:
        model, pixels, reference = self.baseline_maps()
        batch_norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        converted = model.freeze_batch_norm()
        assert converted == batch_norms, f"freeze_batch_norm replaced {converted} of {batch_norms} BatchNorm layers"
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        state = {name: value.clone() for name, value in model.state_dict().items()}
        model.train()
        with torch.no_grad():
            trained = self.run(model, pixels).feature_maps
        if not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
            assert_close_maps(trained, reference, atol=1e-5)
        for name, value in model.state_dict().items():
            assert torch.equal(value, state[name]), f"{name} changed in training mode after freeze_batch_norm"

    # -- precision and layout ---------------------------------------------------------------------

    def test_bf16_autocast_is_close(self, request: pytest.FixtureRequest) -> None:
        self.expect_support(request, "bf16")
        model, pixels, reference = self.baseline_maps()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low = self.run(model, pixels).feature_maps
        for name, fmap, ref in zip(model.out_features, low, reference):
            assert torch.isfinite(fmap).all(), f"stage {name}: non-finite values under bf16 autocast"
            error = ((fmap.float() - ref).norm() / ref.norm().clamp_min(1e-12)).item()
            assert error <= self.bf16_tolerance, f"stage {name}: relative error {error:.3g} > {self.bf16_tolerance}"

    def test_channels_last_gives_same_maps(self, request: pytest.FixtureRequest) -> None:
        self.expect_support(request, "channels_last")
        model, pixels, reference = self.baseline_maps()
        with torch.no_grad():
            as_input = self.run(model, pixels.to(memory_format=torch.channels_last)).feature_maps
            model.to(memory_format=torch.channels_last)
            both = self.run(model, pixels.to(memory_format=torch.channels_last)).feature_maps
        assert_close_maps(as_input, reference, atol=1e-4)
        assert_close_maps(both, reference, atol=1e-4)

    # -- deployment -------------------------------------------------------------------------------

    def _export_bounds(self, model: Backbone) -> tuple[int, int]:
        if self.export_range is not None:
            return self.export_range
        return 2 * max(model.reductions), 256

    def _exported(self) -> tuple[Backbone, Any]:
        """The model (every stage selected; prefix tokens too, where it has some) and its ``torch.export``
        program with dynamic H and W; cached per class."""
        cache = type(self).__dict__.get("_export_cache")
        if cache is None:
            from torch.export import Dim

            model = self.build()
            model.config.output_prefix_tokens = model.num_prefix_tokens > 0
            low, high = self._export_bounds(model)
            step = self.export_multiple
            dims = {}
            for axis, name in ((2, "height"), (3, "width")):
                if step == 1:
                    dims[axis] = Dim(name, min=low, max=high)
                else:
                    dims[axis] = step * Dim(f"{name}_over_{step}", min=-(-low // step), max=high // step)
            pixels = self.inputs()
            extras = self.extra_inputs(model, pixels)
            shapes: dict[str, Any] = {"pixel_values": dims, **dict.fromkeys(extras)}
            traced = torch.export.export(model, (pixels,), kwargs=extras, dynamic_shapes=shapes)
            cache = (model, traced)
            type(self)._export_cache = cache  # type: ignore[attr-defined]
        return cache

    def test_export_with_dynamic_size(self, request: pytest.FixtureRequest) -> None:
        self.expect_support(request, "export")
        model, program = self._exported()
        low, high = self._export_bounds(model)
        for size in self.input_sizes:
            assert all(low <= side <= high and side % self.export_multiple == 0 for side in size), (
                f"input size {size} is outside export_range {(low, high)} or not a multiple of {self.export_multiple}"
            )
            pixels = self.inputs(size, seed=7)
            for extras in self.extra_input_sets(model, pixels):
                with torch.no_grad():
                    exported = program.module()(pixels, **extras)
                    eager = model(pixels, **extras)
                    assert_close_maps(exported.feature_maps, eager.feature_maps, atol=1e-5)
                    if model.num_prefix_tokens:
                        assert_close_maps(exported.prefix_tokens, eager.prefix_tokens, atol=1e-5)

    def test_onnx_export_matches_eager(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.expect_support(request, "export")
        self.expect_support(request, "onnx")
        import onnxruntime

        model, program = self._exported()
        onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
        assert onnx_program is not None
        path = tmp_path / "model.onnx"
        onnx_program.save(str(path))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        # The exporter names an input that is also returned unchanged (a stem map that is the image itself)
        # "<name>_orig"; inputs keep the program's order either way: pixel_values, then the extra inputs.
        input_names = [node.name for node in session.get_inputs()]
        for size in self.input_sizes:
            pixels = self.inputs(size, seed=11)
            for extras in self.extra_input_sets(model, pixels):
                feed = {"pixel_values": pixels, **extras}
                expected = ["pixel_values", *self.extra_inputs(model, pixels)]
                assert [name.removesuffix("_orig") for name in input_names] == expected, (
                    f"ONNX inputs {input_names}, expected {expected}"
                )
                outputs = session.run(None, {name: feed[key].numpy() for name, key in zip(input_names, expected)})
                with torch.no_grad():
                    eager = model(pixels, **extras)
                # Flattened as the output's fields: the maps, then (where the model has them) the prefix tokens.
                reference = [*eager.feature_maps, *(eager.prefix_tokens or ())]
                assert len(outputs) == len(reference)
                assert_close_maps([torch.from_numpy(array) for array in outputs], reference, atol=1e-4)

    def test_distributed_training_ddp_and_fsdp2(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        """Two CPU ranks (gloo): DDP and FSDP2 train; every parameter gets a gradient; ranks agree."""
        self.expect_support(request, "distributed")
        from safetensors.torch import load_file

        from ._distributed import launch

        model = self.build()
        channels, size = self.inputs().shape[1], list(self.input_sizes[0])
        launch(
            model, "backbones.testing._distributed", tmp_path, batch_size=self.batch_size, channels=channels, size=size
        )
        for rank in (0, 1):
            report = json.loads((tmp_path / f"report-{rank}.json").read_text())
            missing = [name for name in report["ddp_missing"] if name not in self.grad_exempt]
            assert not missing, f"rank {rank}: parameters without a gradient under DDP: {missing}"
            missing = [name for name in report["fsdp_missing"] if name not in self.grad_exempt]
            assert not missing, f"rank {rank}: parameters without a gradient under FSDP2: {missing}"
        ddp = [load_file(tmp_path / f"ddp-{rank}.safetensors") for rank in (0, 1)]
        fsdp = [load_file(tmp_path / f"fsdp-{rank}.safetensors") for rank in (0, 1)]
        initial = dict(model.named_parameters())
        assert ddp[0].keys() == fsdp[0].keys() == initial.keys()
        moved = 0
        for name in initial:
            assert torch.equal(ddp[0][name], ddp[1][name]), f"DDP ranks disagree on {name}"
            assert torch.equal(fsdp[0][name], fsdp[1][name]), f"FSDP2 ranks disagree on {name}"
            torch.testing.assert_close(fsdp[0][name], ddp[0][name], rtol=1e-4, atol=1e-5, msg=_labelled(name))
            moved += not torch.equal(ddp[0][name], initial[name].detach())
        assert moved > 0, "training changed no parameter"

    # -- persistence ------------------------------------------------------------------------------

    def test_save_and_load_round_trip(self, tmp_path: Path) -> None:
        model = self.build(out_indices=[1, -1])
        model.save_pretrained(tmp_path)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
        loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert type(loaded) is type(model)
        assert report.clean, str(report)
        assert not loaded.training
        saved = loaded.config.to_dict()
        assert saved.pop("architectures") == [type(model).reference_class_name]
        assert saved == model.config.to_dict()
        assert all(p.device.type != "meta" for p in loaded.parameters())
        pixels = self.inputs()
        with torch.no_grad():
            assert_close_maps(self.run(loaded, pixels).feature_maps, self.run(model, pixels).feature_maps, atol=0.0)

    def test_load_overrides_selection(self, tmp_path: Path) -> None:
        model = self.build()
        model.save_pretrained(tmp_path)
        first = self.first_selectable
        loaded = AutoBackbone.from_pretrained(tmp_path, out_indices=[first, first + 1])
        assert loaded.out_indices == [first, first + 1]
        pixels = self.inputs()
        with torch.no_grad():
            assert_close_maps(self.run(loaded, pixels).feature_maps, self.run(model, pixels).feature_maps[:2], atol=0.0)

    def test_deepcopy_preserves_outputs(self) -> None:
        model = self.build()
        clone = copy.deepcopy(model)
        pixels = self.inputs()
        with torch.no_grad():
            assert_close_maps(self.run(clone, pixels).feature_maps, self.run(model, pixels).feature_maps, atol=0.0)
