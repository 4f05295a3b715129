"""Tests of backbones-vitdet: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, testing
from backbones.testing import TransformersParity, assert_close_maps, assert_parity, random_pixels
from backbones.testing.vit import TINY_VIT, ViTConfigErrors, ViTConformance
from backbones_vitdet import VitDetBackbone, VitDetConfig
from backbones_vitdet.blocks import _relative_table

# A 4x4 fine-tuning grid, a 3x3 pre-training grid (so the absolute table is resampled at every size),
# windowed, global and residual-block layers, relative positions.
TINY: dict[str, Any] = {
    **TINY_VIT,
    "pretrain_image_size": 24,
    "window_size": 2,
    "window_block_indices": [0],
    "residual_block_indices": [1],
    "use_relative_position_embeddings": True,
}
SMALL: dict[str, Any] = {
    **TINY,
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "window_block_indices": [0, 2],
    "residual_block_indices": [1, 3],
}
ALL_STAGES = [0, 1, 2, 3, 4]
# The fine-tuning size (relative tables of global layers used as stored), a non-square size whose 5x7
# grid is padded to whole windows and needs resampled relative tables, and one that is no multiple of
# the patch (the projection floors it to 5x4).
SIZES = [(32, 32), (40, 56), (47, 33)]


# -- conformance ------------------------------------------------------------------------------------


class TestVitDetConformance(ViTConformance):
    # Windows pad and crop back: a map is size // p wide, as the patch projection's (ViTConformance's rounding).
    config_class = VitDetConfig
    config = TINY
    input_sizes = ((32, 32), (48, 40), (42, 59))
    channel_error_name = "ViTDet"
    bad_config_value = ("num_hidden_layers", 1, r"residual_block_indices \[1\] are not layers")


class TestVitDetGlobalConformance(TestVitDetConformance):
    """Global attention only, no position embeddings of either kind."""

    # Its code paths (global attention without position terms) are a subset of TestVitDetConformance's,
    # whose model has global layers too; the slow export, ONNX and distributed checks run there.
    deployment_checks = False
    config = {
        **TINY,
        "window_block_indices": [],
        "use_relative_position_embeddings": False,
        "use_absolute_position_embeddings": False,
    }


# -- parity with transformers -----------------------------------------------------------------------


@contextlib.contextmanager
def oracle_init_for(config: Any, model_class: Any) -> Iterator[None]:
    """Skip transformers' weight init for configs without absolute positions.

    transformers 5.23's _init_weights initialises embeddings.position_embeddings unconditionally and fails
    when the config has none; the weights are randomised or loaded right after, so its init is not needed.
    """
    if config.use_absolute_position_embeddings:
        yield
        return
    original = model_class._init_weights
    model_class._init_weights = lambda self, module: None
    try:
        yield
    finally:
        model_class._init_weights = original


class TestVitDetParity(TransformersParity):
    backbone_class = VitDetBackbone
    # A VitDetModel checkpoint: the same unprefixed keys as the backbone's, so every key is used.
    reference_task_class = "VitDetModel"
    config = SMALL
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "window-2-relpos-residual": {},
        # 3x3 windows never tile the 4x4 grid: every windowed layer pads, at the training size too.
        "window-3-padded-pretrain-32": {"window_size": 3, "window_block_indices": [1, 2], "pretrain_image_size": 32},
        "global-no-positions-relu-no-qkv-bias": {
            "window_block_indices": [],
            "use_relative_position_embeddings": False,
            "use_absolute_position_embeddings": False,
            "hidden_act": "relu",
            "qkv_bias": False,
        },
    }
    input_sizes = (SIZES[1], SIZES[0], SIZES[2])
    out_indices = (tuple(ALL_STAGES), (-1,), (1, 3), (0,))
    hidden_state_count = 5
    hidden_state_shapes = ((2, 32, 5, 7),) * 5
    compare_attentions = True
    task_variants = ("window-2-relpos-residual", "global-no-positions-relu-no-qkv-bias")
    task_out_indices = (0, 2, 4)
    task_options: ClassVar[dict[str, Any]] = {}
    task_prefix = ""
    round_trip_out_indices = (0, 2, 4)

    def build_reference(self, model_class: str, config: Any) -> Any:
        model_type = getattr(transformers, model_class)
        with oracle_init_for(config, model_type):
            return model_type(config)

    def load_reference_checkpoint(self, directory: Path, missing: Iterable[str]) -> Any:
        config = transformers.VitDetConfig.from_pretrained(directory)
        with oracle_init_for(config, transformers.VitDetBackbone):
            return testing.load_reference("VitDetBackbone", directory, missing)

    @pytest.mark.parametrize("variant", ["window-2-relpos-residual", "global-no-positions-relu-no-qkv-bias"])
    def test_base_model_output_is_the_last_map(self, tmp_path: Path, variant: str) -> None:
        base = self.reference_model("VitDetModel", variant)
        base.save_pretrained(tmp_path)
        model = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 2, 4])
        for size in [(32, 32), (40, 56)]:
            inputs = self.pixels(size)
            with torch.no_grad():
                last = base(inputs).last_hidden_state
                assert_parity(model(inputs).feature_maps[-1:], [last])


def test_windowed_attention_weights_have_transformers_shape() -> None:
    model = AutoBackbone.from_config(VitDetConfig(**SMALL, out_indices=[-1])).eval()
    with torch.no_grad():
        attentions = model(random_pixels(40, 56), output_attentions=True).attentions
    # Layers 0 and 2 attend in 2x2 windows of the 5x7 grid padded to 6x8 (12 windows per image).
    assert [tuple(weights.shape) for weights in attentions] == [(24, 2, 4, 4), (2, 2, 35, 35)] * 2


def test_prefixed_trunk_checkpoint_loads(tmp_path: Path) -> None:
    """Keys under transformers' base_model_prefix ('vitdet.', as a task model would nest the trunk) are matched."""
    model = testing.randomize_weights_(AutoBackbone.from_config(VitDetConfig(**SMALL))).eval()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({f"vitdet.{key}": value for key, value in state.items()}, tmp_path / "model.safetensors")
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [] and report.unused_keys == []
    assert report.prefix == "'vitdet.' removed"
    with torch.no_grad():
        assert_close_maps(
            loaded(random_pixels(40, 56)).feature_maps, model(random_pixels(40, 56)).feature_maps, atol=0.0
        )


# -- behaviour --------------------------------------------------------------------------------------


def test_relative_table_is_resampled_linearly() -> None:
    table = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_relative_table(table, 4), table[torch.arange(4)[:, None] - torch.arange(4)[None, :] + 3])
    resized = _relative_table(table, 5)  # 9 offsets from 7
    expected = torch.nn.functional.interpolate(table.t()[None], size=9, mode="linear")[0].t()
    assert tuple(resized.shape) == (5, 5, 4)
    assert torch.equal(resized[4, 0], expected[8]) and torch.equal(resized[0, 4], expected[0])


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(VitDetConfig(**SMALL))
    residual = model.encoder.layer[1].residual
    assert torch.equal(residual.norm3.weight, torch.zeros(32)) and torch.equal(residual.norm3.bias, torch.zeros(32))
    assert torch.equal(residual.norm1.weight, torch.ones(16))
    # Kaiming normal, fan-out, ReLU gain: std sqrt(2 / (16 * 3 * 3)).
    assert residual.conv2.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.15)
    attention = model.encoder.layer[1].attention
    assert attention.qkv.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.equal(attention.qkv.bias, torch.zeros(96))
    assert tuple(attention.rel_pos_h.shape) == (7, 16)  # global layer: the 4x4 grid of image_size
    assert tuple(model.encoder.layer[0].attention.rel_pos_h.shape) == (3, 16)  # 2x2 windows
    # A fresh residual block is the identity.
    x = torch.randn(1, 5, 7, 32)
    assert torch.equal(residual(x), x)


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    model = testing.randomize_weights_(AutoBackbone.from_config(VitDetConfig(**SMALL)))
    model.save_pretrained(tmp_path)
    testing.edit_checkpoint(tmp_path, tmp_path, lambda state: state.pop("encoder.layer.3.residual.conv1.weight"))
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == ["encoder.layer.3.residual.conv1.weight"]
    weight = loaded.encoder.layer[3].residual.conv1.weight  # 16 x 32 x 1 x 1, Kaiming fan-out
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 16), rel=0.2)


@pytest.mark.slow
def test_vitdet_base_shapes_at_224() -> None:
    config = VitDetConfig(
        window_size=14,
        window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10],
        residual_block_indices=[2, 5, 8, 11],
        use_relative_position_embeddings=True,
        out_indices=[3, 6, 9, 12],
    )
    model = AutoBackbone.from_config(config).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 768, 14, 14)] * 4
    assert model.channels == [768] * 4
    assert model.out_reductions == [16] * 4


# -- config errors ----------------------------------------------------------------------------------


class TestVitDetConfigErrors(ViTConfigErrors):
    config_class = VitDetConfig
    config = TINY
    vit_rules = (
        "heads-divide-the-width",
        "square-absolute-position-grid",
        "image-holds-a-patch",
        "square-patches",
        "unknown-activation",
    )
    errors = {
        "window-blocks-are-layers": (
            {"window_block_indices": [0, 3, -1]},
            r"window_block_indices \[3, -1\] are not layers of this model; use 0-based layer indices from 0 to "
            r"num_hidden_layers - 1 = 2",
        ),
        "residual-blocks-are-layers": ({"residual_block_indices": [5]}, r"residual_block_indices \[5\] are not layers"),
    }
    invalid_values = (("window_size", -2, "greater than or equal to 0"),)


def test_pre_training_size_is_free_without_absolute_positions() -> None:
    """Without absolute positions the pre-training size is irrelevant, and image_size may be non-square."""
    config = VitDetConfig(
        **{**TINY, "pretrain_image_size": [24, 32], "image_size": [32, 48]}, use_absolute_position_embeddings=False
    )
    assert config.global_attention_grid == (4, 6)
