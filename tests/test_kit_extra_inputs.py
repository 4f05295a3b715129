"""Extra forward inputs in the conformance kit: a third-party-style backbone whose forward takes a per-sample
``domain_index`` declares it (``extra_forward_inputs``), and every check of the kit that runs the model passes
it; the same backbone without the declaration fails the kit with errors naming the input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from pydantic import Field
from torch import Tensor, nn

from backbones import AutoBackbone, ForwardInput
from backbones.layers import check_pixel_channels
from backbones.testing import BackboneConformance, example_forward_inputs, saved_activation_bytes
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig


class DomainToyConfig(ToyNetConfig):
    model_type: ClassVar[str] = "toynet_domains"

    num_domains: int = Field(default=2, ge=1)


class DomainToyBackbone(ToyNetBackbone):
    """ToyNet whose stem output is scaled per sample by a learned vector of the sample's domain."""

    config_class = DomainToyConfig
    config: DomainToyConfig
    extra_forward_inputs = (
        ForwardInput("domain_index", dtype="int64", examples=(0, 1), description="domain of each image"),
    )

    def __init__(self, config: DomainToyConfig) -> None:
        super().__init__(config)
        self.domain_scale = nn.Embedding(config.num_domains, config.widths[0])
        self._domain_index: Tensor | None = None

    def forward(  # type: ignore[override]
        self, pixel_values: Tensor, domain_index: Tensor | None = None, **options: Any
    ) -> Any:
        if domain_index is None and pixel_values.dim() == 4 and len(pixel_values):
            raise ValueError(f"domain_index is required: one int in [0, {self.config.num_domains - 1}] per image")
        self._domain_index = domain_index
        try:
            return super().forward(pixel_values, **options)
        finally:
            self._domain_index = None

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[Any, ...]:
        assert self._domain_index is not None
        check_pixel_channels(pixel_values, self.config.num_channels, "DomainToy")
        hidden = self.stem(pixel_values) * self.domain_scale(self._domain_index)[:, :, None, None]
        maps: list[Tensor | None] = [hidden]
        for stage in self.stages[:last_stage]:
            hidden = stage(hidden)
            maps.append(hidden)
        return maps, tuple(maps) if output_hidden_states else None, None

    def _stage_modules(self, position: int) -> list[nn.Module]:
        return [self.stem, self.domain_scale] if position == 0 else [self.stages[position - 1]]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.ones_(module.weight)
        else:
            super()._init_weights(module)


class UndeclaredToyConfig(DomainToyConfig):
    model_type: ClassVar[str] = "toynet_undeclared"


class UndeclaredToyBackbone(DomainToyBackbone):
    """The same backbone, its extra input not declared."""

    config_class = UndeclaredToyConfig
    extra_forward_inputs = ()


@pytest.fixture(autouse=True)
def toy_plugins() -> Iterator[None]:
    """Both toy backbones registered at runtime, as a third-party plugin's hook would."""
    from backbones._registry import get_registry, reset_registry

    reset_registry()
    for model_type, model_class in (
        ("toynet_domains", DomainToyBackbone),
        ("toynet_undeclared", UndeclaredToyBackbone),
    ):
        get_registry().register(
            model_type,
            config=f"{__name__}:{model_class.config_class.__name__}",
            model=f"{__name__}:{model_class.__name__}",
            replace=True,
        )
    yield
    reset_registry()


class TestDeclaredExtraInputConformance(BackboneConformance):
    """Every check of the kit, compile, export, ONNX and DDP/FSDP2 included, with domain_index passed."""

    model_type = "toynet_domains"

    def make_config(self, **overrides: Any) -> ToyNetConfig:
        return DomainToyConfig(widths=[4, 8, 8], **overrides)


def test_examples_are_cycled_over_the_batch() -> None:
    spec = ForwardInput("domain_index", dtype="int64", examples=(0, 1))
    config = DomainToyConfig(widths=[4, 8])
    assert spec.example(config, 3).tolist() == [0, 1, 0]
    assert spec.example(config, 3).dtype == torch.int64
    grid = ForwardInput("offsets", shape=(2,), examples=(0.5, -1.0)).example(config, 2)
    assert grid.tolist() == [[0.5, 0.5], [-1.0, -1.0]]
    built = ForwardInput("domain_index", dtype="int64", builder=lambda cfg, n: torch.arange(n) % cfg.num_domains)
    assert built.example(config, 3).tolist() == [0, 1, 0]
    assert built.is_required(config)
    assert not ForwardInput("x", examples=(1,), required=lambda cfg: cfg.num_domains > 2).is_required(config)


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="needs example values"):
        ForwardInput("domain_index")
    with pytest.raises(ValueError, match="must be a Python identifier"):
        ForwardInput("domain index", examples=(0,))
    config = DomainToyConfig(widths=[4, 8])
    with pytest.raises(ValueError, match="'int46' is not a torch dtype name"):
        ForwardInput("domain_index", dtype="int46", examples=(0,)).example(config, 2)
    wrong = ForwardInput("domain_index", builder=lambda cfg, n: torch.zeros(n, 2))
    with pytest.raises(ValueError, match=r"builder returned shape \(2, 2\), expected \(2,\)"):
        wrong.example(config, 2)


def test_declared_input_reaches_the_model_in_kit_helpers() -> None:
    model = AutoBackbone.from_config(DomainToyConfig(widths=[4, 8], out_indices=[0]))
    with torch.no_grad():
        model.domain_scale.weight.copy_(torch.tensor([[1.0] * 4, [3.0] * 4]))
    pixels = torch.randn(2, 3, 16, 16)
    extras = example_forward_inputs(model, 2)
    assert extras["domain_index"].tolist() == [0, 1]
    with torch.no_grad():
        (fmap,) = model(pixels, **extras).feature_maps
        (same,) = model(pixels, domain_index=torch.zeros(2, dtype=torch.long)).feature_maps
    # Sample 0 is in domain 0 both times; sample 1 is scaled by 3 in domain 1.
    torch.testing.assert_close(fmap[0], same[0])
    torch.testing.assert_close(fmap[1], 3 * same[1])
    assert saved_activation_bytes(model.train(), pixels, **extras) > 0
    # forward_with_filtered_kwargs keeps a declared input (and drops what no forward takes).
    kept = model.eval().forward_with_filtered_kwargs(pixels, unknown=1, **extras)
    torch.testing.assert_close(kept.feature_maps[0], fmap)


class _UndeclaredKit(BackboneConformance):
    """The kit on the undeclared backbone (not collected: the tests below run its checks one by one)."""

    model_type = "toynet_undeclared"

    def make_config(self, **overrides: Any) -> ToyNetConfig:
        return UndeclaredToyConfig(widths=[4, 8, 8], **overrides)


def test_undeclared_input_fails_the_declaration_check() -> None:
    kit = _UndeclaredKit()
    with pytest.raises(AssertionError, match=r"forward takes \['domain_index'\], which extra_forward_inputs does not"):
        BackboneConformance.test_extra_forward_inputs_are_declared(kit)


@pytest.mark.parametrize(
    "check",
    [
        "test_deterministic_in_eval_mode",
        "test_batch_items_are_independent",
        "test_compiles_as_one_graph",
        "test_bf16_autocast_is_close",
        "test_gradient_checkpointing_gives_same_gradients",
    ],
)
def test_undeclared_input_fails_forward_checks_by_name(check: str, request: pytest.FixtureRequest) -> None:
    method = getattr(_UndeclaredKit(), check)
    arguments = (request,) if "request" in method.__code__.co_varnames else ()
    with pytest.raises(ValueError, match=r"domain_index is required: one int in \[0, 1\] per image"):
        method(*arguments)
