"""BEiT's pyramid neck with patch sizes that are not multiples of 4 (issue 17): transformers 5.23 builds and runs
them, so ours must too, with the same shapes and values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from backbones import AutoBackbone
from backbones.testing import assert_close_maps, random_pixels, randomize_weights_
from backbones.testing.vit import TINY_VIT
from backbones_beit import BeitBackbone, BeitConfig

transformers = pytest.importorskip("transformers")

# Four layers (five stages) on a 4 x 4 grid of 2-pixel patches: the finest pyramid level has stride 0.5.
TINY_PATCH2: dict[str, Any] = {
    **TINY_VIT,
    "num_hidden_layers": 4,
    "intermediate_size": 32,
    "image_size": 8,
    "patch_size": 2,
    "drop_path_rate": 0.0,
    "add_fpn": True,
    "use_relative_position_bias": True,
    "use_absolute_position_embeddings": True,
}


@pytest.fixture(scope="module", params=[2, 6], ids=["patch2", "patch6"])
def reference_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """transformers' BeitBackbone with the pyramid on stages 1..4, random weights, saved by transformers."""
    patch = request.param
    config = transformers.BeitConfig(
        **{**TINY_PATCH2, "patch_size": patch, "image_size": 4 * patch}, out_indices=[1, 2, 3, 4]
    )
    reference = randomize_weights_(transformers.BeitBackbone(config), seed=5).eval()
    directory = tmp_path_factory.mktemp(f"beit-fpn-patch{patch}")
    reference.save_pretrained(directory)
    return reference, directory


def test_config_with_patch_size_2_builds() -> None:
    config = BeitConfig(**TINY_PATCH2, fpn_indices=[1, 2, 3, 4], out_indices=[0, 1, 2, 3, 4])
    model = BeitBackbone(config)
    assert model.reductions == [2, 0.5, 1, 2, 4]
    assert model.out_reductions == [2, 0.5, 1, 2, 4]


def test_patch_size_2_matches_transformers(reference_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = reference_checkpoint
    patch = reference.config.patch_size
    ours, report = AutoBackbone.from_pretrained(directory, output_loading_info=True)
    assert report.clean, str(report)
    assert ours.config.fpn_indices == [1, 2, 3, 4]
    assert ours.out_reductions == [patch / 4, patch / 2, patch, 2 * patch]
    # The pre-training size, a larger non-square one and one that is not a multiple of the patch.
    for size in [(4 * patch, 4 * patch), (6 * patch, 5 * patch), (5 * patch + 1, 3 * patch)]:
        pixels = random_pixels(*size, seed=1)
        with torch.no_grad():
            expected = reference(pixels).feature_maps
            maps = ours(pixels).feature_maps
        grid = (size[0] // patch, size[1] // patch)
        assert [tuple(fmap.shape) for fmap in maps] == [
            (2, 16, 4 * grid[0], 4 * grid[1]),
            (2, 16, 2 * grid[0], 2 * grid[1]),
            (2, 16, *grid),
            (2, 16, grid[0] // 2, grid[1] // 2),
        ]
        assert [fmap.shape for fmap in maps] == [fmap.shape for fmap in expected]
        assert_close_maps(maps, expected, atol=1e-4)


def test_patch_size_2_from_transformers_config_dict() -> None:
    """The same config.json transformers writes builds ours directly (no fpn_indices: the four out_indices)."""
    saved = transformers.BeitConfig(**TINY_PATCH2, out_indices=[1, 2, 3, 4]).to_dict()
    config = BeitConfig.from_dict(saved)
    assert config.fpn_indices == [1, 2, 3, 4] and config.patch_size == 2
    with torch.no_grad():
        maps = BeitBackbone(config).eval()(random_pixels(8, 8, seed=1)).feature_maps
    assert [tuple(fmap.shape[2:]) for fmap in maps] == [(16, 16), (8, 8), (4, 4), (2, 2)]
