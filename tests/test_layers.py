"""backbones.layers: stochastic depth (the checkpointing and BatchNorm layers are exercised by the kit)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import torch
from torch import nn

from backbones.layers import _ONEDNN_LINEAR, drop_path, linear


def test_drop_path_is_the_identity_outside_training_or_at_rate_zero() -> None:
    x = torch.randn(4, 3, 5, 5)
    assert drop_path(x, 0.3, training=False) is x
    assert drop_path(x, 0.0, training=True) is x


def test_drop_path_drops_whole_samples_and_rescales_the_rest() -> None:
    x = torch.rand(64, 3, 4, 4) + 1.0
    torch.manual_seed(0)
    out = drop_path(x, 0.25, training=True)
    torch.manual_seed(0)
    expected_kept = (torch.rand(64, 1, 1, 1) + 0.75).floor()
    torch.testing.assert_close(out, x / 0.75 * expected_kept, rtol=0, atol=0)
    kept = out.flatten(1).ne(0).all(dim=1)
    dropped = out.flatten(1).eq(0).all(dim=1)
    assert bool((kept | dropped).all()), "every sample is kept or dropped whole"
    assert 0 < int(dropped.sum()) < 64


def test_run_stem_and_stages_runs_only_up_to_the_last_stage() -> None:
    from torch import nn

    from backbones.layers import run_stem_and_stages

    stem = nn.Identity()
    stages = nn.ModuleList(_AddOne() for _ in range(3))
    pixels = torch.zeros(1, 1, 2, 2)
    maps, hidden, attentions = run_stem_and_stages(
        stem, stages, pixels, last_stage=2, num_stages=4, output_hidden_states=False
    )
    assert [None if fmap is None else fmap.flatten()[0].item() for fmap in maps] == [0.0, 1.0, 2.0, None]
    assert hidden is None and attentions is None
    assert [stage.calls for stage in stages] == [1, 1, 0]
    _, hidden, _ = run_stem_and_stages(stem, stages, pixels, last_stage=3, num_stages=4, output_hidden_states=True)
    assert hidden is not None and [state.flatten()[0].item() for state in hidden] == [0.0, 1.0, 2.0, 3.0]


def test_run_token_layers_collects_maps_states_and_attentions() -> None:
    from torch import nn

    from backbones.layers import run_token_layers

    layers = nn.ModuleList(_TokenLayer() for _ in range(3))
    tokens = torch.zeros(1, 2, 4)
    maps, hidden, attentions = run_token_layers(
        tokens,
        layers,
        last_stage=2,
        out_positions={0, 2},
        num_stages=4,
        feature_map=lambda stage_tokens, position: stage_tokens[:, :1] * 10 + position,
        output_hidden_states=True,
        output_attentions=True,
        layer_inputs=(torch.tensor(2.0),),
    )
    assert maps[1] is None and maps[3] is None
    assert maps[0] is not None and maps[0].flatten().tolist() == [0.0] * 4
    assert maps[2] is not None and maps[2].flatten().tolist() == [42.0] * 4  # two layers adding 2, x10, + 2
    assert hidden is not None and [state[0, 0, 0].item() for state in hidden] == [0.0, 2.0, 4.0]
    assert attentions is not None and len(attentions) == 2
    assert [layer.calls for layer in layers] == [1, 1, 0]
    _, hidden, attentions = run_token_layers(
        tokens,
        layers,
        last_stage=1,
        out_positions=(),
        num_stages=4,
        feature_map=lambda stage_tokens, position: stage_tokens,
        output_hidden_states=False,
        output_attentions=False,
        layer_inputs=(torch.tensor(1.0),),
    )
    assert hidden is None and attentions is None


class _AddOne(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + 1


class _TokenLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(
        self, tokens: torch.Tensor, step: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.calls += 1
        return tokens + step, torch.ones(1, 1, 2, 2) if need_weights else None


# -- linear: the oneDNN path -------------------------------------------------------------------------

ONEDNN = "mkldnn::_linear_pointwise"
needs_onednn = pytest.mark.skipif(_ONEDNN_LINEAR is None, reason="this torch build or machine has no oneDNN linear")


def _ran_onednn(function: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    with torch.profiler.profile() as profile:
        out = function()
    return out, any(event.name == ONEDNN for event in profile.events())


@needs_onednn
@pytest.mark.parametrize("activation", [None, nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), nn.SiLU()], ids=repr)
@pytest.mark.parametrize("shape", [(300, 96), (2, 150, 96), (1, 15, 20, 96)])
def test_linear_in_inference_is_one_onednn_call_with_the_modules_result(
    activation: nn.Module | None, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(96, 384)
    x = torch.randn(shape)
    expected = layer(x) if activation is None else activation(layer(x))
    with torch.inference_mode():
        out, fused = _ran_onednn(lambda: linear(x, layer, activation))
    assert fused
    assert out.shape == (*shape[:-1], 384)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_linear_in_bfloat16_and_without_bias() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(96, 384, bias=False).to(torch.bfloat16)
    x = torch.randn(300, 96, dtype=torch.bfloat16)
    with torch.no_grad():
        out, fused = _ran_onednn(lambda: linear(x, layer, nn.GELU()))
        expected = nn.functional.gelu(layer(x))
    assert fused and out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=1.6e-2, atol=1e-2)


class _Wrapped(nn.Module):
    """A layer around a linear one (what a LoRA adapter is): it must be called, not bypassed."""

    def __init__(self) -> None:
        super().__init__()
        self.base_layer = nn.Linear(96, 384)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + 1.0


def _hooked() -> nn.Linear:
    layer = nn.Linear(96, 384)
    layer.register_forward_hook(lambda module, inputs, output: output * 2.0)
    return layer


@pytest.mark.parametrize(
    ("case", "make_layer", "activation", "size", "mode"),
    [
        ("autograd on", lambda: nn.Linear(96, 384), nn.GELU(), 300, "grad"),
        ("a wrapper", _Wrapped, nn.GELU(), 300, "inference"),
        ("a forward hook", _hooked, nn.Identity(), 300, "inference"),
        ("an activation without a oneDNN post-op", lambda: nn.Linear(96, 384), nn.Tanh(), 300, "inference"),
        ("too little work", lambda: nn.Linear(96, 384), nn.GELU(), 4, "inference"),
        ("CPU autocast", lambda: nn.Linear(96, 384), nn.GELU(), 300, "autocast"),
    ],
)
def test_linear_otherwise_calls_the_modules(
    case: str, make_layer: Callable[[], nn.Module], activation: nn.Module, size: int, mode: str
) -> None:
    torch.manual_seed(0)
    layer = make_layer()
    x = torch.randn(size, 96)
    expected = activation(layer(x))
    context = {
        "grad": contextlib.nullcontext(),
        "inference": torch.inference_mode(),
        "autocast": torch.autocast("cpu", dtype=torch.bfloat16),
    }[mode]
    with context:
        out, fused = _ran_onednn(lambda: linear(x, layer, activation))
        if mode == "autocast":
            expected = activation(layer(x))
    assert not fused, case
    assert out.dtype == expected.dtype
    assert out.requires_grad == (mode != "inference"), case
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(96, 384)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.fc, self.act)


def test_traced_and_exported_graphs_hold_the_standard_linear() -> None:
    # Graphs for other runtimes (TorchScript for ONNX, torch.export) must not hold the oneDNN call.
    model, x = _Mlp().eval(), torch.randn(300, 96)
    with torch.no_grad():
        traced = str(torch.jit.trace(model, x).inlined_graph)
        exported = str(torch.export.export(model, (x,)).graph)
    assert "aten::linear" in traced and "mkldnn" not in traced
    assert "aten.linear" in exported and "mkldnn" not in exported
