"""backbones.activations: transformers' hidden_act names, checked against transformers' ACT2FN."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import ACT2FN

from backbones.activations import ACTIVATIONS, check_activation, make_activation


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_name_means_what_transformers_means(name: str) -> None:
    x = torch.linspace(-6, 6, 241)
    assert torch.allclose(make_activation(name)(x.clone()), ACT2FN[name](x.clone()), atol=1e-6)
    assert list(make_activation(name).parameters()) == [], "no learnable activation: no extra checkpoint keys"


def test_in_place_only_where_autograd_allows_it() -> None:
    assert make_activation("relu", inplace=True).inplace is True
    assert make_activation("relu").inplace is False
    x = torch.tensor([-1.0, 2.0])
    make_activation("leaky_relu", inplace=True)(x)
    assert torch.equal(x, torch.tensor([-0.01, 2.0]))
    assert type(make_activation("gelu", inplace=True)).__name__ == "GELU"
    assert not hasattr(make_activation("gelu", inplace=True), "inplace")


@pytest.mark.parametrize("name", ["hardswish", "silu", "relu6"])
def test_in_place_after_a_norm_gives_the_same_values_and_gradients(name: str) -> None:
    """Overwriting a norm's output is safe: the same output, and the same gradients as out of place."""
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm2d(4)
    results = []
    for inplace in (False, True):
        x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
        activation = make_activation(name, inplace=inplace)
        assert getattr(activation, "inplace", False) is inplace
        y = activation(norm(x))
        (y * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] is not None and torch.allclose(results[0][1], results[1][1], atol=1e-6)
    assert results[0][1].abs().sum() > 0


def test_unknown_name_lists_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"^act 'geglu' is not supported; set act to one of \['gelu', 'gelu_new'"):
        check_activation("geglu", field="act")
    with pytest.raises(ValueError, match=r"hidden_act 'swiglu' is not supported"):
        make_activation("swiglu")
