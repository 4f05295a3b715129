"""Code written against transformers' MaskFormerSwinBackbone runs unchanged on ours (issue 17, item 5).

transformers 5.23 is the oracle: its ``hidden_states`` are the stem's ``(batch, height * width, channels)``
tokens, then per stage every block's input and output (``2 * depth`` entries of that shape); ours hold the same
tensors, each stage's stacked on a first axis, so iterating, indexing and ``len`` give transformers' values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from backbones import AutoBackbone
from backbones.testing import randomize_weights_
from backbones.testing.hierarchical import SWIN_SMALL
from backbones_maskformer_swin import MaskFormerSwinBackbone, MaskFormerSwinConfig

transformers = pytest.importorskip("transformers")

# Three stages of 1, 2 and 2 blocks: a stage of one block, shifted windows, patch merging, padding.
ARCHITECTURE: dict[str, Any] = dict(SWIN_SMALL)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, MaskFormerSwinBackbone]:
    """transformers' backbone with random weights, and ours loaded from its checkpoint."""
    reference = transformers.MaskFormerSwinBackbone(
        transformers.MaskFormerSwinConfig(out_indices=[1, 2, 3], **ARCHITECTURE)
    )
    reference = randomize_weights_(reference, seed=5).eval()
    directory: Path = tmp_path_factory.mktemp("maskformer-swin")
    reference.save_pretrained(directory)
    ours = AutoBackbone.from_pretrained(directory)
    assert isinstance(ours, MaskFormerSwinBackbone)
    return reference, ours.eval()


@pytest.mark.parametrize("size", [(32, 32), (36, 52)])
def test_hidden_states_nest_like_transformers(pair: tuple[Any, MaskFormerSwinBackbone], size: tuple[int, int]) -> None:
    reference, ours = pair
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        theirs = reference(pixels, output_hidden_states=True).hidden_states
        mine = ours(pixels, output_hidden_states=True).hidden_states
    assert mine is not None
    assert len(mine) == len(theirs) == 4
    assert [len(stage) for stage in mine[1:]] == [len(stage) for stage in theirs[1:]] == [2, 4, 4]
    rows, cols = -(-size[0] // 4), -(-size[1] // 4)
    grids = [(rows, cols), (-(-rows // 2), -(-cols // 2)), (-(-rows // 4), -(-cols // 4))]
    # The stem: (batch, height * width, channels) tokens, as transformers gives them.
    assert mine[0].shape == theirs[0].shape == (2, rows * cols, 16)
    torch.testing.assert_close(mine[0], theirs[0], rtol=0, atol=1e-5)
    for stage, (ours_stage, their_stage, (height, width), channels) in enumerate(
        zip(mine[1:], theirs[1:], grids, [16, 32, 64]), start=1
    ):
        for block, (tokens, expected) in enumerate(zip(ours_stage, their_stage)):
            # Code that unpacks transformers' per-block states works on ours.
            batch, length, width_channels = tokens.shape
            assert (batch, length, width_channels) == (2, height * width, channels), (stage, block)
            torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-4, msg=f"stage {stage}, entry {block}")
        # The last entry is the stage output before patch merging: its normalised map is the feature map.
        torch.testing.assert_close(ours_stage[-1], their_stage[-1], rtol=0, atol=1e-4)


def test_tuple_output_nests_the_same_way(pair: tuple[Any, MaskFormerSwinBackbone]) -> None:
    reference, ours = pair
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        maps, hidden = ours(pixels, output_hidden_states=True, return_dict=False)
        theirs = reference(pixels, output_hidden_states=True, return_dict=False)[1]
    assert [tuple(state.shape) for state in hidden] == [(1, 64, 16), (2, 1, 64, 16), (4, 1, 16, 32), (4, 1, 4, 64)]
    assert [tuple(tokens.shape) for stage in theirs[1:] for tokens in stage] == [
        tuple(tokens.shape) for stage in hidden[1:] for tokens in stage
    ]
    # A block's output is the next block's input, in both.
    assert torch.equal(hidden[2][1], hidden[2][2])
    assert torch.equal(theirs[2][1], theirs[2][2])
    assert len(maps) == 3


def test_hidden_states_leave_feature_maps_unchanged(pair: tuple[Any, MaskFormerSwinBackbone]) -> None:
    reference, ours = pair
    pixels = torch.randn(2, 3, 36, 52, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        plain = ours(pixels).feature_maps
        with_states = ours(pixels, output_hidden_states=True).feature_maps
        expected = reference(pixels).feature_maps
    for mine, again, theirs in zip(plain, with_states, expected):
        assert torch.equal(mine, again)
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4)


# -- the stem is not an output (item 5a) ----------------------------------------------------------


@pytest.mark.parametrize(
    "selection",
    [{"out_features": ["stem"]}, {"out_indices": [0]}, {"out_features": ["stem", "stage3"]}, {"out_indices": [0, -1]}],
)
def test_selecting_the_stem_raises_as_in_transformers(selection: dict[str, list[Any]]) -> None:
    config = transformers.MaskFormerSwinConfig(**ARCHITECTURE, **selection)
    with pytest.raises(ValueError, match="stem"):
        transformers.MaskFormerSwinBackbone(config)
    ours = MaskFormerSwinConfig(**ARCHITECTURE, **selection)  # the config accepts it, as transformers' does
    assert "stem" in ours.out_features
    with pytest.raises(ValueError, match=r"cannot output \['stem'\]: .*select from \['stage1', 'stage2', 'stage3'\]"):
        MaskFormerSwinBackbone(ours)


def test_loading_with_the_stem_selected_raises(pair: tuple[Any, MaskFormerSwinBackbone], tmp_path: Path) -> None:
    _, ours = pair
    ours.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"cannot output \['stem'\]"):
        AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 1])


def test_assigning_the_stem_raises_and_keeps_the_selection(pair: tuple[Any, MaskFormerSwinBackbone]) -> None:
    _, ours = pair
    before = list(ours.out_features)
    for assign in (lambda: setattr(ours, "out_features", ["stem"]), lambda: setattr(ours, "out_indices", [0])):
        with pytest.raises(ValueError, match="are not exposed"):
            assign()
        assert ours.out_features == before and ours.config.out_features == before
