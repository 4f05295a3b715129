"""Conformance kit: the tests every backbone plugin runs, ours and third parties'.

Subclass :class:`BackboneConformance` in a plugin's test module, name the subclass ``Test...`` and give it
a small config::

    from backbones.testing import BackboneConformance

    class TestSwinConformance(BackboneConformance):
        model_type = "swin"

        def make_config(self, **overrides):
            return SwinConfig(embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=2, **overrides)

pytest then runs every ``test_*`` method below against it. Also exported: :func:`randomize_weights_`
(give every parameter and statistic a non-trivial value before saving a parity checkpoint) and
:func:`assert_close_maps` (max-abs-diff comparison with a readable failure).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from .. import AutoBackbone, Backbone, BackboneConfig, BackboneOutput, get_registry

__all__ = ["BackboneConformance", "assert_close_maps", "randomize_weights_"]

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


def assert_close_maps(ours: Sequence[Tensor], reference: Sequence[Tensor], atol: float = 1e-4) -> float:
    """Assert two sequences of feature maps have equal shapes and max abs difference ``<= atol``.

    Returns:
        The largest absolute difference found.
    """
    assert len(ours) == len(reference), f"{len(ours)} feature maps vs {len(reference)} in the reference"
    worst = 0.0
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        assert tuple(mine.shape) == tuple(theirs.shape), (
            f"map {index}: shape {tuple(mine.shape)} vs {tuple(theirs.shape)}"
        )
        diff = (mine.detach().double() - theirs.detach().double()).abs().max().item() if mine.numel() else 0.0
        assert diff <= atol, f"map {index} (shape {tuple(mine.shape)}): max abs diff {diff:.3g} > {atol}"
        worst = max(worst, diff)
    return worst


class BackboneConformance:
    """Contract tests for one backbone plugin. Subclass it as ``Test<Name>Conformance``.

    Class attributes:
        model_type: The registered model type.
        input_sizes: Two or more ``(height, width)`` sizes; use sizes the architecture supports.
        spatial_rounding: ``"ceil"`` if a stage of stride ``r`` is ``ceil(size / r)`` wide (padding
            backbones), ``"floor"`` if ``size // r``.
        batch_size: Batch size of the test inputs.
        grad_exempt: Names of parameters that get no gradient by design (document why in the plugin).
    """

    model_type: ClassVar[str] = ""
    input_sizes: ClassVar[tuple[tuple[int, int], ...]] = ((64, 64), (96, 80))
    spatial_rounding: ClassVar[str] = "ceil"
    batch_size: ClassVar[int] = 2
    grad_exempt: ClassVar[tuple[str, ...]] = ()

    def make_config(self, **overrides: Any) -> BackboneConfig:
        """Return a small config of this plugin's architecture with ``overrides`` applied."""
        raise NotImplementedError("set make_config in the conformance subclass")

    # -- helpers ----------------------------------------------------------------------------------

    def build(self, seed: int = 0, **overrides: Any) -> Backbone:
        """A randomly initialised model in eval mode, every stage selected unless overridden."""
        torch.manual_seed(seed)
        config = self.make_config(**overrides)
        if "out_indices" not in overrides and "out_features" not in overrides:
            config.out_indices = list(range(len(config.stage_names)))
        model = AutoBackbone.from_config(config)
        randomize_weights_(model, seed)
        return model.eval()

    def inputs(self, size: tuple[int, int] | None = None, seed: int = 1) -> Tensor:
        height, width = size or self.input_sizes[0]
        channels = getattr(self.make_config(), "num_channels", 3)
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(self.batch_size, channels, height, width, generator=generator)

    def expected_size(self, size: int, reduction: int) -> int:
        return math.ceil(size / reduction) if self.spatial_rounding == "ceil" else size // reduction

    # -- registry and config ----------------------------------------------------------------------

    def test_registered_under_model_type(self) -> None:
        config = self.make_config()
        assert config.model_type == self.model_type
        registration = get_registry().get(self.model_type)
        assert registration.load_config_class() is type(config)
        model_class = registration.load_model_class()
        assert issubclass(model_class, Backbone)
        assert model_class.config_class is type(config)

    def test_default_selection_is_last_stage(self) -> None:
        config = self.make_config()
        assert config.out_features == [config.stage_names[-1]]
        assert config.out_indices == [len(config.stage_names) - 1]

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
        model.out_indices = (0, -1)
        assert model.out_features == [names[0], names[-1]]
        with pytest.raises(ValueError, match="valid stage names"):
            model.out_features = ["no-such-stage"]

    # -- metadata against outputs -----------------------------------------------------------------

    def test_metadata_matches_outputs(self) -> None:
        assert len(self.input_sizes) >= 2, "check metadata at two input sizes at least"
        model = self.build()
        assert len(model.num_features) == len(model.stage_names) == len(model.reductions)
        assert model.out_feature_channels == dict(zip(model.stage_names, model.num_features))
        assert model.channels == model.num_features
        for size in self.input_sizes:
            with torch.no_grad():
                maps = model(self.inputs(size)).feature_maps
            assert len(maps) == len(model.stage_names)
            for name, fmap, channels, reduction in zip(model.stage_names, maps, model.num_features, model.reductions):
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
            (fmap,) = model(self.inputs()).feature_maps
        assert fmap.shape[1] == model.channels[0]

    # -- forward contract -------------------------------------------------------------------------

    def test_output_forms_agree(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            as_dict = model(pixels)
            as_tuple = model(pixels, return_dict=False)
        assert isinstance(as_dict, BackboneOutput)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
        assert_close_maps(as_tuple[0], as_dict.feature_maps, atol=0.0)
        assert_close_maps(as_dict["feature_maps"], as_dict[0], atol=0.0)
        assert as_dict.hidden_states is None and as_dict.attentions is None

    def test_hidden_states_on_request(self) -> None:
        model = self.build(out_indices=[1])
        with torch.no_grad():
            output = model(self.inputs(), output_hidden_states=True)
            as_tuple = model(self.inputs(), output_hidden_states=True, return_dict=False)
        assert output.hidden_states is not None and len(output.hidden_states) >= len(model.stage_names)
        assert all(isinstance(state, Tensor) for state in output.hidden_states)
        assert len(as_tuple) == 2 and len(as_tuple[1]) == len(output.hidden_states)

    def test_attentions_on_request(self) -> None:
        model = self.build()
        pixels = self.inputs()
        if model.has_attentions:
            with torch.no_grad():
                output = model(pixels, output_attentions=True)
            assert output.attentions is not None and len(output.attentions) > 0
            assert all(isinstance(weights, Tensor) and torch.isfinite(weights).all() for weights in output.attentions)
        else:
            with pytest.raises(ValueError, match="output_attentions"):
                model(pixels, output_attentions=True)
        with torch.no_grad():
            filtered = model.forward_with_filtered_kwargs(pixels, output_attentions=False, unknown_option=1)
        assert isinstance(filtered, BackboneOutput)
        assert len(filtered.feature_maps) == len(model.stage_names)

    def test_rejects_non_image_input(self) -> None:
        model = self.build()
        with pytest.raises(ValueError, match="4-D"):
            model(self.inputs()[0])

    def test_deterministic_in_eval_mode(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            first = model(pixels).feature_maps
            second = model(pixels).feature_maps
        assert_close_maps(first, second, atol=0.0)

    def test_batch_items_are_independent(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            batched = model(pixels).feature_maps
            single = model(pixels[1:2]).feature_maps
        assert_close_maps([fmap[1:2] for fmap in batched], single, atol=1e-4)

    def test_compiles_as_one_graph(self) -> None:
        import torch._dynamo

        model = self.build(out_indices=[1, -1])
        pixels = self.inputs()
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        with torch.no_grad():
            assert_close_maps(compiled(pixels).feature_maps, model(pixels).feature_maps, atol=1e-5)
            model.out_indices = [0]
            (fmap,) = compiled(pixels).feature_maps
        assert fmap.shape[1] == model.num_features[0], "a new selection is honoured after compiling"

    # -- truncation -------------------------------------------------------------------------------

    def test_truncated_forward_equals_full_forward(self) -> None:
        full = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            reference = full(pixels).feature_maps
        for index in range(len(full.stage_names)):
            model = self.build(out_indices=[index])
            model.load_state_dict(full.state_dict(), strict=False)
            with torch.no_grad():
                (fmap,) = model(pixels).feature_maps
            assert_close_maps([fmap], [reference[index]], atol=0.0)

    def test_pruning_frees_deeper_stages(self) -> None:
        model = self.build(out_indices=[1])
        pixels = self.inputs()
        with torch.no_grad():
            before = model(pixels).feature_maps
        count = sum(p.numel() for p in model.parameters())
        pruned = model.prune_unused_stages()
        assert pruned == model.stage_names[2:]
        if pruned:
            assert sum(p.numel() for p in model.parameters()) < count
            with pytest.raises(ValueError, match="pruned"):
                model.out_indices = [-1]
        with torch.no_grad():
            after = model(pixels).feature_maps
        assert_close_maps(after, before, atol=0.0)

    # -- training ---------------------------------------------------------------------------------

    def test_every_parameter_gets_a_gradient(self) -> None:
        model = self.build().train()
        maps = model(self.inputs()).feature_maps
        loss = sum(fmap.float().pow(2).mean() for fmap in maps)
        loss.backward()
        missing = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad and p.grad is None and name not in self.grad_exempt
        ]
        assert not missing, f"parameters without a gradient (unused in forward): {missing}"
        bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients: {bad}"

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
        assert saved.pop("architectures") == [model.reference_class_name or type(model).__name__]
        assert saved == model.config.to_dict()
        assert all(p.device.type != "meta" for p in loaded.parameters())
        pixels = self.inputs()
        with torch.no_grad():
            assert_close_maps(loaded(pixels).feature_maps, model(pixels).feature_maps, atol=0.0)

    def test_load_overrides_selection(self, tmp_path: Path) -> None:
        model = self.build()
        model.save_pretrained(tmp_path)
        loaded = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 1])
        assert loaded.out_indices == [0, 1]
        pixels = self.inputs()
        with torch.no_grad():
            assert_close_maps(loaded(pixels).feature_maps, model(pixels).feature_maps[:2], atol=0.0)

    def test_deepcopy_preserves_outputs(self) -> None:
        model = self.build()
        clone = copy.deepcopy(model)
        pixels = self.inputs()
        with torch.no_grad():
            assert_close_maps(clone(pixels).feature_maps, model(pixels).feature_maps, atol=0.0)
