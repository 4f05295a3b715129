"""Fine-tuning checks of the conformance kit: optimizer parameter groups and LoRA through peft.

:class:`TrainingConformance` is one of :class:`~backbones.testing.BackboneConformance`'s bases, so every
plugin's conformance class runs these checks. Run as ``torchrun ... -m backbones.testing._training SPEC``,
this module is also the worker of the LoRA distributed check (DDP on a peft-adapted backbone).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import torch
from torch import Tensor

from ._tensors import assert_close_maps, example_forward_inputs, feature_map_loss

if TYPE_CHECKING:
    from .. import Backbone, BackboneConfig

__all__ = ["TrainingConformance"]


class TrainingConformance:
    """Fine-tuning checks: :func:`backbones.training.param_groups`, RGB weights loaded for other channel
    counts (``num_channels``), and LoRA through peft on the declared ``lora_target_modules``.

    A backbone that declares no ``lora_target_modules``, or whose config has no ``num_channels`` of 3, has
    those checks skipped (with the reason). ``limitations`` may name ``"grey_from_rgb"`` (a grey model is
    not the RGB model on a repeated grey image); the LoRA compile and DDP checks honour ``"compile"`` and
    ``"distributed"``.

    Class attributes:
        lora_deployment_checks: Also run the compile and DDP checks on the LoRA-adapted model (slow; the
            kit runs them for one plugin of each family).
    """

    lora_deployment_checks: ClassVar[bool] = False

    _LORA_DEPLOYMENT_CHECKS: ClassVar[tuple[str, ...]] = (
        "test_lora_adapted_model_compiles_as_one_graph",
        "test_lora_adapted_model_trains_under_ddp",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # As BackboneConformance's deployment checks: a class that does not want them does not have them.
        for name in cls._LORA_DEPLOYMENT_CHECKS:
            if not cls.lora_deployment_checks:
                setattr(cls, name, None)
            elif getattr(cls, name) is None:
                setattr(cls, name, getattr(TrainingConformance, name))

    # Provided by BackboneConformance.
    model_type: ClassVar[str]
    batch_size: ClassVar[int]
    input_sizes: ClassVar[tuple[tuple[int, int], ...]]
    grad_exempt: ClassVar[tuple[str, ...]]

    def make_config(self, **overrides: Any) -> BackboneConfig:
        raise NotImplementedError

    def build(self, seed: int = 0, **overrides: Any) -> Backbone:
        raise NotImplementedError

    def inputs(self, size: tuple[int, int] | None = None, seed: int = 1) -> Tensor:
        raise NotImplementedError

    def expect_support(self, request: pytest.FixtureRequest, mode: str) -> None:
        raise NotImplementedError

    def input_channel_overrides(self, channels: int) -> dict[str, Any]:
        """The config overrides that load this plugin's RGB checkpoint for ``channels`` input channels.

        ``{"num_channels": channels}``; a plugin whose config repeats the count elsewhere (HGNetV2's
        ``stem_channels[0]``) adds those fields.
        """
        return {"num_channels": channels}

    # -- input channels -----------------------------------------------------------------------------

    def _rgb_checkpoint(self, directory: Path) -> Backbone:
        if getattr(self.make_config(), "num_channels", None) != 3:
            pytest.skip("the config has no num_channels of 3: there are no RGB weights to adapt")
        rgb = self.build()
        # A stage at stride 1 is the image itself (its channels are the input's): compare the others.
        rgb.out_indices = [p for p in rgb.out_positions if rgb.reductions[p] > 1]
        rgb.save_pretrained(directory)
        return rgb

    def test_rgb_weights_load_for_other_channel_counts(self, tmp_path: Path) -> None:
        from .. import AutoBackbone

        rgb = self._rgb_checkpoint(tmp_path)
        for channels, how in ((1, "filters summed"), (4, "filters repeated cyclically, scaled by 3/4")):
            model, report = AutoBackbone.from_pretrained(
                tmp_path, output_loading_info=True, **self.input_channel_overrides(channels)
            )
            assert report.adapted_keys and report.clean, str(report)
            assert set(report.adapted_keys.values()) == {f"3 -> {channels} input channels, {how}"}
            model.train()
            pixels = self.inputs().repeat(1, 2, 1, 1)[:, :channels]
            extras = example_forward_inputs(model, len(pixels))
            feature_map_loss(model(pixels, **extras).feature_maps).backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(grad).all() for grad in grads)
            assert [fmap.shape[1] for fmap in model(pixels, **extras).feature_maps] == rgb.channels

    def test_grey_input_equals_rgb_input_repeated(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        from .. import AutoBackbone

        self.expect_support(request, "grey_from_rgb")
        rgb = self._rgb_checkpoint(tmp_path)
        grey = AutoBackbone.from_pretrained(tmp_path, **self.input_channel_overrides(1))
        image = self.inputs()[:, :1]
        extras = example_forward_inputs(rgb, len(image))
        with torch.no_grad():
            greys = grey(image, **extras).feature_maps
            assert_close_maps(greys, rgb(image.repeat(1, 3, 1, 1), **extras).feature_maps, atol=1e-4)

    # -- parameter groups ---------------------------------------------------------------------------

    def test_param_groups_cover_every_parameter_once(self) -> None:
        from ..training import layer_decay_blocks, layer_ids, param_groups

        model = self.build()
        ids, num_blocks = layer_ids(model)
        assert num_blocks == len(layer_decay_blocks(model))
        layer_decay = 0.5 if num_blocks else None
        groups = param_groups(model, lr=1e-2, weight_decay=0.1, layer_decay=layer_decay)
        listed = [id(p) for group in groups for p in group["params"]]
        assert sorted(listed) == sorted(id(p) for p in model.parameters()), "a parameter is in no group or in two"
        for group in groups:
            names = group["param_names"]
            assert group["lr"] == pytest.approx(1e-2 * group["lr_scale"])
            if group["weight_decay"]:
                assert all(p.ndim > 1 for p in group["params"]), f"decayed vectors among {names}"
            if num_blocks:
                assert {ids[name] for name in names} == {group["layer_id"]}
                assert group["lr_scale"] == pytest.approx(0.5 ** (num_blocks + 1 - group["layer_id"]))
        if not num_blocks:
            with pytest.raises(ValueError, match="layer_decay needs the blocks of"):
                param_groups(model, lr=1e-2, layer_decay=0.5)
            return
        # Block i is layer i + 1; every layer id lies between the embeddings (0) and the output (L + 1).
        for index, block in enumerate(layer_decay_blocks(model)):
            inside = {id(p) for p in block.parameters()}
            assert {ids[n] for n, p in model.named_parameters() if id(p) in inside} <= {index + 1}
        assert set(ids.values()) <= set(range(num_blocks + 2))

    def test_param_groups_skip_frozen_stages_and_train(self, request: pytest.FixtureRequest) -> None:
        from ..training import layer_ids, param_groups

        self.expect_support(request, "freeze_stages")
        model = self.build().train()
        model.freeze_stages(1)
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert frozen, "freezing the stem froze no parameter"
        layer_decay = 0.5 if layer_ids(model)[1] else None
        groups = param_groups(model, lr=1e-2, layer_decay=layer_decay)
        listed = {name for group in groups for name in group["param_names"]}
        assert not listed & frozen, f"frozen parameters in the groups: {sorted(listed & frozen)[:5]}"
        assert listed == {n for n, p in model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(groups)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        pixels = self.inputs()
        feature_map_loss(model(pixels, **example_forward_inputs(model, len(pixels))).feature_maps).backward()
        optimizer.step()
        for name, parameter in model.named_parameters():
            if name in frozen:
                assert torch.equal(parameter, before[name]), f"{name} is frozen but changed"
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()), "the step changed nothing"

    # -- LoRA (peft) --------------------------------------------------------------------------------

    def _lora(self, seed: int = 0) -> Any:
        """The backbone of :meth:`build` with LoRA adapters (rank 2, random B so they change the output) on
        its declared ``lora_target_modules``, as a ``peft.PeftModel`` in eval mode."""
        peft = pytest.importorskip("peft")
        model = self.build(seed)
        targets = list(type(model).lora_target_modules)
        if not targets:
            pytest.skip(f"{type(model).__name__} declares no lora_target_modules")
        config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False)
        torch.manual_seed(seed + 100)
        return peft.get_peft_model(model, config).eval()

    def test_lora_trains_adapters_only_and_round_trips(self, tmp_path: Path) -> None:
        from peft import PeftModel

        adapted = self._lora()
        trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
        assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable), trainable[:5]
        pixels = self.inputs()
        extras = example_forward_inputs(adapted.get_base_model(), len(pixels))
        with torch.no_grad():
            plain = self.build()(pixels, **extras).feature_maps
            reference = adapted(pixels, **extras).feature_maps
        assert any(not torch.allclose(a, b) for a, b in zip(reference, plain)), "the adapters change nothing"
        # Forward and backward: every adapter weight, and nothing else, gets a gradient.
        adapted.train()
        feature_map_loss(adapted(pixels, **extras).feature_maps).backward()
        adapted.eval()
        missing = [n for n, p in adapted.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"adapter weights without a gradient: {missing[:5]}"
        assert all(p.grad is None for p in adapted.parameters() if not p.requires_grad)
        # The adapter saved alone and loaded onto a fresh backbone (same base weights) gives the same maps.
        adapted.save_pretrained(tmp_path)
        assert (tmp_path / "adapter_model.safetensors").is_file()
        reloaded = PeftModel.from_pretrained(self.build(), tmp_path).eval()
        with torch.no_grad():
            assert_close_maps(reloaded(pixels, **extras).feature_maps, reference, atol=0.0)
            # Merged into the weights, the plain backbone gives the adapted model's maps.
            merged = reloaded.merge_and_unload()
            assert type(merged) is type(self.build()) and not any("lora_" in n for n, _ in merged.named_parameters())
            assert_close_maps(merged(pixels, **extras).feature_maps, reference, atol=1e-4)

    def test_lora_adapted_model_compiles_as_one_graph(self, request: pytest.FixtureRequest) -> None:
        import torch._dynamo

        self.expect_support(request, "compile")
        adapted = self._lora()
        pixels = self.inputs()
        extras = example_forward_inputs(adapted.get_base_model(), len(pixels))
        torch._dynamo.reset()
        with torch.no_grad():
            explanation = torch._dynamo.explain(adapted)(pixels, **extras)
        assert explanation.graph_break_count == 0, f"graph breaks: {explanation.break_reasons}"
        torch._dynamo.reset()
        compiled: Any = torch.compile(adapted, backend="eager", fullgraph=True)
        with torch.no_grad():
            eager = adapted(pixels, **extras).feature_maps
            assert_close_maps(compiled(pixels, **extras).feature_maps, eager, atol=1e-5)

    def test_lora_adapted_model_trains_under_ddp(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        """Two CPU ranks (gloo) train the adapted model under DDP: every adapter weight gets a gradient, the
        ranks end equal, the base weights do not move."""
        from safetensors.torch import load_file

        self.expect_support(request, "distributed")
        from ._distributed import launch

        adapted = self._lora()
        model = adapted.get_base_model()
        channels, size = self.inputs().shape[1], list(self.input_sizes[0])
        launch(model, "backbones.testing._training", tmp_path, batch_size=self.batch_size, channels=channels, size=size)
        states = [load_file(tmp_path / f"lora-{rank}.safetensors") for rank in (0, 1)]
        report = json.loads((tmp_path / "report-0.json").read_text())
        assert report["trainable"] and not report["missing"], f"adapter weights without a gradient: {report['missing']}"
        start = load_file(tmp_path / "start.safetensors")
        moved = 0
        for name, value in states[0].items():
            assert torch.equal(value, states[1][name]), f"DDP ranks disagree on {name}"
            if name in report["trainable"]:
                moved += not torch.equal(value, start[name])
            else:
                assert torch.equal(value, start[name]), f"{name} is not an adapter weight but changed"
        assert moved > 0, "training changed no adapter weight"


def _lora_worker(spec_path: str) -> None:
    """One rank of :meth:`TrainingConformance.test_lora_adapted_model_trains_under_ddp`."""
    import peft

    from ._distributed import _build, _train, finish, join_group, save_parameters

    spec, rank, out = join_group(spec_path)
    model = _build(spec)
    targets = list(getattr(type(model), "lora_target_modules", ()))
    torch.manual_seed(100)
    adapted = peft.get_peft_model(
        model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    )
    if rank == 0:
        save_parameters(adapted, out / "start.safetensors")
    ddp = torch.nn.parallel.DistributedDataParallel(adapted)
    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    missing = _train(adapted, ddp, spec, rank)
    save_parameters(adapted, out / f"lora-{rank}.safetensors")
    (out / f"report-{rank}.json").write_text(json.dumps({"trainable": trainable, "missing": missing}))
    finish()


if __name__ == "__main__":
    _lora_worker(sys.argv[1])
