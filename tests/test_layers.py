"""backbones.layers: stochastic depth (the checkpointing and BatchNorm layers are exercised by the kit)."""

from __future__ import annotations

import torch

from backbones.layers import drop_path


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
