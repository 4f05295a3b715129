"""Tests of backbones-vitdet: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, ConfigError
from backbones.testing import BackboneConformance, assert_close_maps, randomize_weights_
from backbones_vitdet import VitDetBackbone, VitDetConfig
from backbones_vitdet._model import _relative_table

# A 4x4 fine-tuning grid, a 3x3 pre-training grid (so the absolute table is resampled at every size),
# windowed, global and residual-block layers, relative positions.
TINY: dict[str, Any] = {
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": 32,
    "pretrain_image_size": 24,
    "patch_size": 8,
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


class TestVitDetConformance(BackboneConformance):
    model_type = "vitdet"
    input_sizes = ((32, 32), (48, 40), (42, 59))
    # The patch projection is a stride-p convolution without padding, and windows pad and crop back:
    # a map is size // p wide.
    spatial_rounding = "floor"

    def make_config(self, **overrides: Any) -> VitDetConfig:
        return VitDetConfig(**TINY, **overrides)


class TestVitDetGlobalConformance(TestVitDetConformance):
    """Global attention only, no position embeddings of either kind."""

    # Its code paths (global attention without position terms) are a subset of TestVitDetConformance's,
    # whose model has global layers too; the slow export, ONNX and distributed checks run there.
    deployment_checks = False

    def make_config(self, **overrides: Any) -> VitDetConfig:
        settings = {**TINY, "window_block_indices": [], "use_relative_position_embeddings": False}
        return VitDetConfig(**settings, use_absolute_position_embeddings=False, **overrides)


# -- parity with transformers -----------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
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


def pixels(height: int = 40, width: int = 56, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))


def oracle_config(variant: str, **extra: Any) -> transformers.VitDetConfig:
    return transformers.VitDetConfig(**{**SMALL, **VARIANTS[variant]}, out_indices=ALL_STAGES, **extra)


@contextlib.contextmanager
def oracle_init_for(config: transformers.VitDetConfig, model_class: Any) -> Iterator[None]:
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


def load_oracle(directory: Path) -> tuple[transformers.VitDetBackbone, dict[str, Any]]:
    # The concrete class, not transformers.AutoBackbone: in 5.23 AutoBackbone.from_pretrained(local_dir)
    # asks the hub first and fails offline.
    config = transformers.VitDetConfig.from_pretrained(directory)
    with oracle_init_for(config, transformers.VitDetBackbone):
        model, info = transformers.VitDetBackbone.from_pretrained(directory, output_loading_info=True)
    return model.eval(), info


def oracle_outputs(oracle: Any, inputs: torch.Tensor, out_indices: list[int], **options: bool) -> Any:
    oracle.out_indices = out_indices
    with torch.no_grad():
        return oracle(inputs, **options)


def random_oracle(config: transformers.VitDetConfig, model_class: Any = transformers.VitDetBackbone) -> Any:
    with oracle_init_for(config, model_class):
        model = model_class(config)
    return randomize_weights_(model).eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def oracle_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A transformers VitDetBackbone with every weight randomised, and its checkpoint."""
    oracle = random_oracle(oracle_config(request.param))
    directory = tmp_path_factory.mktemp(request.param)
    oracle.save_pretrained(directory)
    return directory, oracle


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("out_indices", [ALL_STAGES, [-1], [1, 3], [0]], ids=str)
def test_backbone_checkpoint_matches_transformers(
    oracle_checkpoint: tuple[Path, Any], out_indices: list[int], size: tuple[int, int]
) -> None:
    directory, oracle = oracle_checkpoint
    model, report = AutoBackbone.from_pretrained(directory, out_indices=out_indices, output_loading_info=True)
    assert isinstance(model, VitDetBackbone)
    assert report.clean, str(report)
    inputs = pixels(*size)
    with torch.no_grad():
        ours = model(inputs).feature_maps
    reference = oracle_outputs(oracle, inputs, out_indices).feature_maps
    assert len(ours) == len(out_indices)
    assert_close_maps(ours, reference, atol=1e-4)
    assert model.channels == oracle.channels


def test_hidden_states_and_attentions_match_transformers(oracle_checkpoint: tuple[Path, Any]) -> None:
    directory, oracle = oracle_checkpoint
    model = AutoBackbone.from_pretrained(directory, out_indices=[-1])
    inputs = pixels()
    with torch.no_grad():
        ours = model(inputs, output_hidden_states=True, output_attentions=True)
    reference = oracle_outputs(oracle, inputs, [-1], output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(reference.hidden_states) == 5
    assert tuple(ours.hidden_states[0].shape) == (2, 32, 5, 7)
    assert_close_maps(ours.hidden_states, reference.hidden_states, atol=1e-4)
    assert len(ours.attentions) == len(reference.attentions) == 4
    assert_close_maps(ours.attentions, reference.attentions, atol=1e-5)


def test_windowed_attention_weights_have_transformers_shape() -> None:
    model = AutoBackbone.from_config(VitDetConfig(**SMALL, out_indices=[-1])).eval()
    with torch.no_grad():
        attentions = model(pixels(), output_attentions=True).attentions
    # Layers 0 and 2 attend in 2x2 windows of the 5x7 grid padded to 6x8 (12 windows per image).
    assert [tuple(weights.shape) for weights in attentions] == [(24, 2, 4, 4), (2, 2, 35, 35)] * 2


@pytest.mark.parametrize("size", [(32, 32), (40, 56)], ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("variant", ["window-2-relpos-residual", "global-no-positions-relu-no-qkv-bias"])
def test_base_model_checkpoint_loads(tmp_path: Path, variant: str, size: tuple[int, int]) -> None:
    """A VitDetModel checkpoint: the same unprefixed keys as the backbone's, so every key is used."""
    config = oracle_config(variant)
    base = random_oracle(config, transformers.VitDetModel)
    base.save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 2, 4], output_loading_info=True)
    assert report.missing_keys == [] and report.unused_keys == [] and report.prefix == ""
    oracle = random_oracle(config)
    oracle.load_state_dict(base.state_dict(), strict=True)
    inputs = pixels(*size)
    with torch.no_grad():
        ours = model(inputs).feature_maps
    assert_close_maps(ours, oracle_outputs(oracle, inputs, [0, 2, 4]).feature_maps, atol=1e-4)
    # The base model's own output is the last stage's map.
    with torch.no_grad():
        last = base(inputs).last_hidden_state
    assert_close_maps(ours[-1:], [last], atol=1e-4)


def test_prefixed_trunk_checkpoint_loads(tmp_path: Path) -> None:
    """Keys under transformers' base_model_prefix ('vitdet.', as a task model would nest the trunk) are matched."""
    model = randomize_weights_(AutoBackbone.from_config(VitDetConfig(**SMALL))).eval()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({f"vitdet.{key}": value for key, value in state.items()}, tmp_path / "model.safetensors")
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [] and report.unused_keys == []
    assert report.prefix == "'vitdet.' removed"
    with torch.no_grad():
        assert_close_maps(loaded(pixels()).feature_maps, model(pixels()).feature_maps, atol=0.0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_our_checkpoint_loads_into_transformers(tmp_path: Path, variant: str) -> None:
    config = VitDetConfig(**{**SMALL, **VARIANTS[variant]}, out_indices=[0, 2, 4])
    model = randomize_weights_(AutoBackbone.from_config(config)).eval()
    model.save_pretrained(tmp_path)
    oracle, info = load_oracle(tmp_path)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert oracle.out_indices == [0, 2, 4]
    for size in SIZES:
        inputs = pixels(*size)
        with torch.no_grad():
            assert_close_maps(model(inputs).feature_maps, oracle(inputs).feature_maps, atol=1e-4)


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
    model = randomize_weights_(AutoBackbone.from_config(VitDetConfig(**SMALL)))
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.3.residual.conv1.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == ["encoder.layer.3.residual.conv1.weight"]
    weight = loaded.encoder.layer[3].residual.conv1.weight  # 16 x 32 x 1 x 1, Kaiming fan-out
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 16), rel=0.2)


def test_wrong_channel_count_is_explained() -> None:
    model = AutoBackbone.from_config(VitDetConfig(**TINY))
    with pytest.raises(
        ValueError, match=r"pixel_values has 4 channels but this ViTDet expects 3 \(config.num_channels\)"
    ):
        model(torch.zeros(1, 4, 32, 32))


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


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match=r"num_attention_heads=3 does not divide hidden_size=16; choose a head count"):
        VitDetConfig(**{**TINY, "num_attention_heads": 3})


def test_block_indices_must_name_layers() -> None:
    message = r"window_block_indices \[3, -1\] are not layers of this model; use 0-based layer indices from 0 to num_hidden_layers - 1 = 2"
    with pytest.raises(ValueError, match=message):
        VitDetConfig(**{**TINY, "window_block_indices": [0, 3, -1]})
    with pytest.raises(ValueError, match=r"residual_block_indices \[5\] are not layers"):
        VitDetConfig(**{**TINY, "residual_block_indices": [5]})


def test_absolute_position_grid_must_be_square() -> None:
    message = r"pretrain_image_size \(24, 32\) gives a 3x4 grid of patches, .*use a square pretrain_image_size"
    with pytest.raises(ValueError, match=message):
        VitDetConfig(**{**TINY, "pretrain_image_size": [24, 32]})
    # Without absolute positions the pre-training size is irrelevant, and image_size may be non-square.
    config = VitDetConfig(
        **{**TINY, "pretrain_image_size": [24, 32], "image_size": [32, 48]}, use_absolute_position_embeddings=False
    )
    assert config.global_attention_grid == (4, 6)


def test_images_must_hold_a_patch() -> None:
    with pytest.raises(ValueError, match=r"image_size 4 is smaller than patch_size 8; set image_size >= patch_size"):
        VitDetConfig(**{**TINY, "image_size": 4})


def test_negative_window_size_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"window_size=-2: Input should be greater than or equal to 0"):
        VitDetConfig(**{**TINY, "window_size": -2})


def test_patches_must_be_square() -> None:
    with pytest.raises(
        ValueError, match=r"patch_size must be one int or a square pair such as \[16, 16\], got \[8, 4\]"
    ):
        VitDetConfig(**{**TINY, "patch_size": [8, 4]})


def test_unknown_activation_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"hidden_act 'swishy' is not supported; set hidden_act to one of \[.*'gelu'"):
        VitDetConfig(hidden_act="swishy")


def test_bad_config_file_names_the_file_and_field(tmp_path: Path) -> None:
    VitDetConfig(**TINY).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"num_hidden_layers": 3', '"num_hidden_layers": 1'))
    with pytest.raises(
        ConfigError, match=r"invalid backbone config in .*config.json: .*residual_block_indices \[1\] are not layers"
    ):
        AutoBackbone.from_pretrained(tmp_path)
