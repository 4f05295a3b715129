"""Tests of the neighbourhood-attention op against brute-force references of natten's semantics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from backbones_nat.attention import neighborhood_attention_2d, neighborhood_indices

sys.path.insert(0, str(Path(__file__).resolve().parent))

from natten_reference import dense_neighborhood_attention, key_offsets, natten2dav, natten2dqkrpb


def _inputs(
    height: int, width: int, kernel: int, heads: int = 2, dim: int = 3, batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(batch, height, width, heads, dim, generator=generator, dtype=torch.float64) for _ in range(3)
    )
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=generator, dtype=torch.float64)
    return q, k, v, rpb


def _natten(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None, kernel: int, dilation: int):
    """transformers' use of natten's two kernels: scaled query, scores with bias, softmax, weighted values."""
    heads_first = [x.permute(0, 3, 1, 2, 4) for x in (q, k, v)]
    weights = natten2dqkrpb(heads_first[0] * q.shape[-1] ** -0.5, heads_first[1], rpb, kernel, dilation).softmax(-1)
    return natten2dav(weights, heads_first[2], kernel, dilation).permute(0, 2, 3, 1, 4), weights


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"{tuple(a.shape)} vs {tuple(b.shape)}"
    return (a - b).abs().max().item()


# -- the references agree with each other ---------------------------------------------------------


@pytest.mark.parametrize(("length", "kernel", "dilation"), [(7, 7, 1), (12, 3, 4), (13, 3, 4), (23, 5, 3), (9, 3, 3)])
def test_window_rules_of_the_reference(length: int, kernel: int, dilation: int) -> None:
    positions, biases = key_offsets(length, kernel, dilation)
    for query, (keys, bias) in enumerate(zip(positions, biases)):
        assert len(set(keys)) == kernel and all(0 <= key < length for key in keys)
        assert all(key % dilation == query % dilation for key in keys), "keys share the query's residue"
        assert [(key - query) // dilation + kernel - 1 for key in keys] == bias, "bias = dilated offset + K - 1"
        if keys[0] - dilation >= 0 and keys[-1] + dilation < length:
            assert keys[kernel // 2] == query, "away from the borders the window is centred"


def test_reference_examples_by_hand() -> None:
    # length 10, kernel 3, dilation 3: sub-sequences {0,3,6,9}, {1,4,7}, {2,5,8}.
    positions, biases = key_offsets(10, 3, 3)
    assert positions[0] == [0, 3, 6] and biases[0] == [2, 3, 4]  # clamped at the start
    assert positions[3] == [0, 3, 6] and biases[3] == [1, 2, 3]  # centred
    assert positions[9] == [3, 6, 9] and biases[9] == [0, 1, 2]  # clamped at the end
    assert positions[7] == [1, 4, 7] and biases[7] == [0, 1, 2]  # a shorter sub-sequence: whole window
    assert positions[5] == [2, 5, 8] and biases[5] == [1, 2, 3]


@pytest.mark.parametrize(("height", "width", "kernel", "dilation"), [(7, 9, 3, 2), (10, 10, 5, 2), (8, 13, 7, 1)])
def test_dense_reference_equals_natten_kernels(height: int, width: int, kernel: int, dilation: int) -> None:
    q, k, v, rpb = _inputs(height, width, kernel)
    expected, _ = _natten(q, k, v, rpb, kernel, dilation)
    context, _ = dense_neighborhood_attention(q, k, v, rpb, kernel, dilation)
    assert _max_diff(context, expected) < 1e-12


# -- the op against the references ----------------------------------------------------------------

CASES = [
    (7, 7, 7, 1),  # the map is exactly one window
    (9, 11, 3, 1),
    (20, 17, 3, 2),
    (23, 30, 5, 3),
    (16, 16, 3, 5),  # sub-sequences of lengths 4 and 3
    (40, 33, 7, 1),  # several tiles per axis
    (33, 40, 7, 2),
    (21, 21, 7, 3),  # every sub-sequence is exactly one window
    (56, 60, 7, 8),  # DiNAT's first stage at 224 px: 56 x 56 with dilation 8, 7-long sub-sequences
    (36, 40, 3, 12),  # 12 sub-sequences per axis, each exactly a window long (3 or 4 along the width)
]


@pytest.mark.parametrize(("height", "width", "kernel", "dilation"), CASES)
def test_op_matches_reference(height: int, width: int, kernel: int, dilation: int) -> None:
    q, k, v, rpb = _inputs(height, width, kernel)
    expected, expected_weights = _natten(q, k, v, rpb, kernel, dilation)
    context, weights = neighborhood_attention_2d(q, k, v, rpb, kernel, dilation, return_weights=True)
    fused, none = neighborhood_attention_2d(q, k, v, rpb, kernel, dilation)
    assert none is None and weights is not None
    assert _max_diff(context, expected) < 1e-12
    assert _max_diff(fused, expected) < 1e-12
    assert _max_diff(weights, expected_weights) < 1e-12
    assert torch.allclose(weights.sum(-1), torch.ones(()).double())


@settings(max_examples=60, deadline=None)
@given(
    kernel=st.sampled_from([1, 3, 5, 7]),
    dilation=st.integers(1, 6),
    extra_height=st.integers(0, 14),
    extra_width=st.integers(0, 14),
    heads=st.integers(1, 3),
    tile=st.one_of(st.none(), st.integers(1, 9)),
    with_bias=st.booleans(),
)
def test_op_matches_reference_everywhere(
    kernel: int, dilation: int, extra_height: int, extra_width: int, heads: int, tile: int | None, with_bias: bool
) -> None:
    height, width = kernel * dilation + extra_height, kernel * dilation + extra_width
    q, k, v, rpb = _inputs(height, width, kernel, heads=heads, batch=1, seed=extra_height * 31 + extra_width)
    bias = rpb if with_bias else None
    expected, _ = dense_neighborhood_attention(q, k, v, bias, kernel, dilation)
    context, weights = neighborhood_attention_2d(q, k, v, bias, kernel, dilation, return_weights=True, tile_size=tile)
    assert _max_diff(context, expected) < 1e-12
    _, natten_weights = _natten(q, k, v, bias, kernel, dilation)
    assert weights is not None and _max_diff(weights, natten_weights) < 1e-12


@settings(max_examples=80, deadline=None)
@given(kernel=st.sampled_from([1, 3, 5, 7, 9]), dilation=st.integers(1, 8), extra=st.integers(0, 40))
def test_neighborhood_indices_match_reference(kernel: int, dilation: int, extra: int) -> None:
    length = kernel * dilation + extra
    positions, _ = key_offsets(length, kernel, dilation)
    assert neighborhood_indices(length, kernel, dilation).tolist() == positions


@pytest.mark.parametrize("tile", [1, 2, 3, 5, 8, 13, 64])
def test_tile_size_changes_nothing(tile: int) -> None:
    q, k, v, rpb = _inputs(31, 26, 5, seed=3)
    expected, _ = neighborhood_attention_2d(q, k, v, rpb, 5, 2)
    context, _ = neighborhood_attention_2d(q, k, v, rpb, 5, 2, tile_size=tile)
    assert _max_diff(context, expected) < 1e-12


def test_value_dim_and_scale_are_free() -> None:
    q, k, _, rpb = _inputs(15, 12, 3, dim=4)
    v = torch.randn(2, 15, 12, 2, 6, dtype=torch.float64)
    expected, _ = dense_neighborhood_attention(q, k, v, rpb, 3, 2, scale=0.7)
    context, _ = neighborhood_attention_2d(q, k, v, rpb, 3, 2, scale=0.7)
    assert context.shape == (2, 15, 12, 2, 6)
    assert _max_diff(context, expected) < 1e-12


@pytest.mark.parametrize(("height", "width", "kernel", "dilation"), [(11, 14, 3, 3), (16, 9, 3, 1)])
def test_gradients_match_reference(height: int, width: int, kernel: int, dilation: int) -> None:
    q, k, v, rpb = (x.requires_grad_() for x in _inputs(height, width, kernel))
    upstream = torch.randn(2, height, width, 2, 3, dtype=torch.float64)
    expected, _ = dense_neighborhood_attention(q, k, v, rpb, kernel, dilation)
    reference = torch.autograd.grad(expected, (q, k, v, rpb), upstream)
    for return_weights in (False, True):
        context, _ = neighborhood_attention_2d(q, k, v, rpb, kernel, dilation, return_weights=return_weights)
        grads = torch.autograd.grad(context, (q, k, v, rpb), upstream)
        for name, ours, theirs in zip("qkv", grads, reference):
            assert _max_diff(ours, theirs) < 1e-12, name
        assert _max_diff(grads[3], reference[3]) < 1e-11, "rpb"


def test_float32_and_float16_inputs() -> None:
    q, k, v, rpb = (x.float() for x in _inputs(20, 20, 5))
    expected, _ = dense_neighborhood_attention(q.double(), k.double(), v.double(), rpb.double(), 5, 2)
    context, _ = neighborhood_attention_2d(q, k, v, rpb, 5, 2)
    assert context.dtype == torch.float32 and _max_diff(context.double(), expected) < 1e-5
    half, _ = neighborhood_attention_2d(q.bfloat16(), k.bfloat16(), v.bfloat16(), rpb, 5, 2)
    assert half.dtype == torch.bfloat16 and _max_diff(half.double(), expected) < 5e-2


def test_plan_cached_in_inference_mode_serves_autograd() -> None:
    q, k, v, rpb = _inputs(17, 19, 3, seed=5)
    with torch.inference_mode():
        neighborhood_attention_2d(q, k, v, rpb, 3, 2)
    rpb.requires_grad_()
    context, _ = neighborhood_attention_2d(q, k, v, rpb, 3, 2)
    context.sum().backward()
    assert rpb.grad is not None and rpb.grad.abs().sum() > 0


def test_compiles_as_one_graph() -> None:
    import torch._dynamo

    q, k, v, rpb = _inputs(14, 18, 3, seed=7)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda *args: neighborhood_attention_2d(*args, 3, 3, return_weights=True), backend="eager", fullgraph=True
    )
    context, weights = compiled(q, k, v, rpb)
    expected, expected_weights = _natten(q, k, v, rpb, 3, 3)
    assert _max_diff(context, expected) < 1e-12 and _max_diff(weights, expected_weights) < 1e-12


def test_dropout_drops_weights_in_training() -> None:
    q, k, v, rpb = (x.float() for x in _inputs(12, 12, 3))
    torch.manual_seed(0)
    dropped, _ = neighborhood_attention_2d(q, k, v, rpb, 3, 1, dropout_p=0.5)
    kept, _ = neighborhood_attention_2d(q, k, v, rpb, 3, 1)
    assert not torch.allclose(dropped, kept)


# -- small maps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "kernel", "dilation", "message"),
    [
        (6, 9, 3, 3, r"height 6 is smaller than kernel_size \* dilation = 3 \* 3 = 9; pad the map"),
        (9, 4, 5, 1, r"width 4 is smaller than kernel_size \* dilation = 5 \* 1 = 5"),
    ],
)
def test_op_refuses_maps_smaller_than_the_dilated_window(
    height: int, width: int, kernel: int, dilation: int, message: str
) -> None:
    q, k, v, rpb = _inputs(height, width, kernel)
    with pytest.raises(ValueError, match=message):
        neighborhood_attention_2d(q, k, v, rpb, kernel, dilation)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kernel_size": 4}, "kernel_size must be a positive odd number"),
        ({"dilation": 0}, "dilation must be a positive integer, got 0"),
        ({"tile_size": 0}, "tile_size must be a positive integer, got 0"),
        (
            {"rpb": torch.zeros(3, 5, 5)},
            r"rpb must have shape \(heads, 2 \* kernel_size - 1, 2 \* kernel_size - 1\) = \(2, 5, 5\)",
        ),
    ],
)
def test_op_rejects_bad_arguments(arguments: dict[str, object], message: str) -> None:
    q, k, v, rpb = _inputs(12, 12, 3)
    call = {"rpb": rpb, "kernel_size": 3, "dilation": 1, **arguments}
    with pytest.raises(ValueError, match=message):
        neighborhood_attention_2d(q, k, v, **call)  # type: ignore[arg-type]


def test_op_rejects_mismatched_shapes() -> None:
    q, k, v, rpb = _inputs(12, 12, 3)
    with pytest.raises(ValueError, match="query, key and value must be"):
        neighborhood_attention_2d(q, k[:, :11], v, rpb, 3)


@pytest.mark.parametrize(
    ("height", "width", "kernel", "dilation"), [(4, 4, 3, 2), (5, 9, 5, 1), (3, 7, 3, 8), (1, 1, 3, 1)]
)
def test_layer_pads_small_maps_like_the_reference(height: int, width: int, kernel: int, dilation: int) -> None:
    """A NAT layer pads a map smaller than ``kernel * dilation`` after its first norm (as transformers does);
    compared with transformers' recipe written out with natten's kernels. Covers dilation > map size."""
    from backbones_nat import NatConfig
    from backbones_nat._model import _Layer

    config = NatConfig(embed_dim=8, depths=[1], num_heads=[2], kernel_size=kernel)
    torch.manual_seed(0)
    layer = _Layer(config, 8, 2, dilation, 0.0).double().eval()
    for parameter in layer.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(2, height, width, 8, dtype=torch.float64)
    with torch.no_grad():
        ours, weights = layer(x, need_weights=True)
        window = kernel * dilation
        padded = F.pad(layer.layernorm_before(x), (0, 0, 0, max(0, window - width), 0, max(0, window - height)))
        attention = layer.attention.self
        q, k, v = (proj(padded).unflatten(-1, (2, 4)) for proj in (attention.query, attention.key, attention.value))
        context, expected_weights = _natten(q, k, v, attention.rpb, kernel, dilation)
        branch = layer.attention.output.dense(context.flatten(-2))[:, :height, :width]
        expected = x + branch
        expected = expected + layer.output.dense(F.gelu(layer.intermediate.dense(layer.layernorm_after(expected))))
    assert weights is not None and weights.shape == (2, 2, max(height, window), max(width, window), kernel * kernel)
    assert _max_diff(weights, expected_weights) < 1e-12
    assert _max_diff(ours, expected) < 1e-12
