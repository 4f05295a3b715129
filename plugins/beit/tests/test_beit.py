"""Tests of backbones-beit: the conformance kit, parity with transformers 5.23, behaviour, config errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, ConfigError
from backbones.testing import BackboneConformance, assert_close_maps, randomize_weights_
from backbones_beit import BeitBackbone, BeitConfig

transformers = pytest.importorskip("transformers")

# Four layers (five stages), a 4 x 4 pre-training grid of 8-pixel patches: tiny, yet every code path.
TINY: dict[str, Any] = {
    "hidden_size": 16,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "image_size": 32,
    "patch_size": 8,
    "drop_path_rate": 0.0,
}
ALL_STAGES = [0, 1, 2, 3, 4]
PYRAMID: dict[str, Any] = {**TINY, "add_fpn": True, "use_relative_position_bias": True}
# The pre-training size, a larger non-square one (both position tables upsampled) and a smaller one.
SIZES = [(32, 32), (48, 40), (24, 16)]
# transformers 5.x renames the on-disk keys in memory; ours keep the on-disk names. Ours -> theirs.
_REFERENCE_RENAMES = (
    (r"^beit\.encoder\.relative_position_bias\.", "beit.shared_position_bias."),
    (r"\.encoder\.layer\.", ".layers."),
    (r"\.attention\.attention\.relative_position_bias\.", ".relative_position_bias."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"^fpn1\.0\.", "fpn.fpn1.conv_transpose1."),
    (r"^fpn1\.1\.", "fpn.fpn1.normalization."),
    (r"^fpn1\.3\.", "fpn.fpn1.conv_transpose2."),
    (r"^fpn2\.0\.", "fpn.fpn2."),
)


def _pixels(height: int, width: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _reference(model_class: Any = None, seed: int = 3, **config: Any) -> Any:
    """A transformers BEiT model with every weight (and BatchNorm statistic) re-randomised, in eval mode."""
    model_class = model_class or transformers.BeitBackbone
    model = model_class(transformers.BeitConfig(**config))
    return randomize_weights_(model, seed=seed).eval()


def _reference_trunk(task_model: Any, neck_missing: bool = False, **config: Any) -> Any:
    """transformers' BeitBackbone holding a task model's trunk (and pyramid), loaded by state dict.

    transformers' AutoBackbone.from_pretrained(local_dir) asks the hub first and fails offline, and
    BeitBackbone.from_pretrained on a task checkpoint would not map its keys; in memory both classes
    use the same names, so the state dict carries over directly.
    """
    reference = transformers.BeitBackbone(transformers.BeitConfig(**config)).eval()
    own = set(reference.state_dict())
    result = reference.load_state_dict({k: v for k, v in task_model.state_dict().items() if k in own}, strict=False)
    assert result.unexpected_keys == []
    assert all(key.startswith("fpn.") for key in result.missing_keys) if neck_missing else result.missing_keys == []
    return reference


def _reference_name(our_name: str) -> str:
    for pattern, replacement in _REFERENCE_RENAMES:
        our_name = re.sub(pattern, replacement, our_name)
    return our_name


# -- conformance ----------------------------------------------------------------------------------


class _BeitConformance(BackboneConformance):
    model_type = "beit"
    # Multiples of the patch: a stage of stride r is then exactly size // r wide, pyramid levels included
    # (an upsampled level is 4 * (size // patch), which equals size // (patch / 4) only for such sizes).
    # 48 x 40 is non-square and not the pre-training size, so both position tables are resampled.
    input_sizes = ((32, 32), (48, 40))
    spatial_rounding = "floor"
    extra: dict[str, Any] = {}

    def make_config(self, **overrides: Any) -> BeitConfig:
        return BeitConfig(**{**TINY, **self.extra, **overrides})


class TestBeitConformance(_BeitConformance):
    """Per-layer relative-position bias, absolute position embeddings, layer scale."""

    extra = {"use_relative_position_bias": True, "use_absolute_position_embeddings": True}


class TestBeitSharedBiasConformance(_BeitConformance):
    """One relative-position bias shared by all layers, no layer scale (as BEiT pre-training checkpoints)."""

    extra = {"use_shared_relative_position_bias": True, "layer_scale_init_value": 0.0}


class TestBeitPyramidConformance(_BeitConformance):
    """With the pyramid neck on stages 1..4 (strides 2, 4, 8, 16) and the stem left as is (stride 8)."""

    extra = {"add_fpn": True, "fpn_indices": [1, 2, 3, 4], "use_relative_position_bias": True}


# -- parity with transformers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """transformers' BeitBackbone (all stages selected) saved by transformers itself."""
    reference = _reference(
        out_indices=ALL_STAGES, use_relative_position_bias=True, use_absolute_position_embeddings=True, **TINY
    )
    directory = tmp_path_factory.mktemp("reference")
    reference.save_pretrained(directory)
    return reference, directory


@pytest.mark.parametrize("out_indices", [ALL_STAGES, [-1], [1, 3], [0]])
def test_backbone_checkpoint_parity(reference_checkpoint: tuple[Any, Path], out_indices: list[int]) -> None:
    reference, directory = reference_checkpoint
    ours, report = AutoBackbone.from_pretrained(directory, out_indices=out_indices, output_loading_info=True)
    assert isinstance(ours, BeitBackbone)
    assert ours.out_features == [ours.stage_names[index] for index in out_indices]
    # transformers' BeitBackbone writes its trunk without the "beit." prefix.
    assert (report.missing_keys, report.unused_keys, report.prefix) == ([], [], "'beit.' added")
    positions = [index % 5 for index in out_indices]
    for size in SIZES:
        pixels = _pixels(*size)
        with torch.no_grad():
            expected = reference(pixels).feature_maps
            maps = ours(pixels).feature_maps
        assert [tuple(fmap.shape) for fmap in maps] == [(2, 16, size[0] // 8, size[1] // 8)] * len(out_indices)
        assert_close_maps(maps, [expected[position] for position in positions], atol=1e-4)


def test_shared_bias_checkpoint_parity(tmp_path: Path) -> None:
    # The pre-training layout: one shared bias, no layer scale; without mean pooling the trunk has a
    # final layernorm, which no backbone stage uses.
    reference = _reference(
        out_indices=[0, 2, 4],
        use_shared_relative_position_bias=True,
        layer_scale_init_value=0.0,
        use_mean_pooling=False,
        **TINY,
    )
    reference.save_pretrained(tmp_path)
    assert "beit.encoder.relative_position_bias.relative_position_bias_table" in load_file(
        tmp_path / "model.safetensors"
    )
    ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == []
    assert report.unused_keys == ["beit.layernorm.bias", "beit.layernorm.weight"]
    assert not any("lambda" in key for key in ours.state_dict())
    for size in SIZES:
        pixels = _pixels(*size)
        with torch.no_grad():
            assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)


def test_shared_and_per_layer_bias_add_up(tmp_path: Path) -> None:
    reference = _reference(
        out_indices=[1, 4], use_shared_relative_position_bias=True, use_relative_position_bias=True, **TINY
    )
    reference.save_pretrained(tmp_path)
    ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.clean, str(report)
    for size in SIZES:
        pixels = _pixels(*size)
        with torch.no_grad():
            assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)


@pytest.fixture(scope="module")
def pyramid_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """transformers' BeitBackbone with its pyramid neck on stages 1..4, saved by transformers."""
    reference = _reference(out_indices=[1, 2, 3, 4], use_absolute_position_embeddings=True, **PYRAMID)
    directory = tmp_path_factory.mktemp("pyramid")
    reference.save_pretrained(directory)
    return reference, directory


def test_pyramid_checkpoint_parity(pyramid_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = pyramid_checkpoint
    ours, report = AutoBackbone.from_pretrained(directory, output_loading_info=True)
    assert report.clean, str(report)
    # transformers' rule: the four selected stages feed the four levels; the config records them.
    assert ours.config.fpn_indices == [1, 2, 3, 4]
    assert ours.out_reductions == [2, 4, 8, 16] and ours.channels == [16] * 4
    for size in SIZES:
        pixels = _pixels(*size)
        with torch.no_grad():
            expected = reference(pixels).feature_maps
            maps = ours(pixels).feature_maps
        grid = (size[0] // 8, size[1] // 8)
        assert [tuple(fmap.shape[2:]) for fmap in maps] == [
            (4 * grid[0], 4 * grid[1]),
            (2 * grid[0], 2 * grid[1]),
            grid,
            (grid[0] // 2, grid[1] // 2),
        ]
        assert_close_maps(maps, expected, atol=1e-4)


def test_pyramid_stages_keep_their_level_in_any_selection(pyramid_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = pyramid_checkpoint
    pixels = _pixels(48, 40)
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True)
    # A subset of the pyramid stages, plus the stem (not a pyramid stage: its raw patch grid).
    ours = AutoBackbone.from_pretrained(directory, out_indices=[0, 2, 4], fpn_indices=[1, 2, 3, 4])
    assert ours.out_reductions == [8, 4, 16]
    with torch.no_grad():
        stem, stage2, stage4 = ours(pixels).feature_maps
    stem_reference = expected.hidden_states[0][:, 1:].transpose(1, 2).reshape(2, 16, 6, 5)
    assert_close_maps([stem, stage2, stage4], [stem_reference, *expected.feature_maps[1::2]], atol=1e-4)
    # Reselecting on a loaded model keeps the bound levels too.
    ours.out_indices = [3]
    with torch.no_grad():
        assert_close_maps(ours(pixels).feature_maps, [expected.feature_maps[2]], atol=1e-4)


def test_pyramid_override_without_fpn_indices_says_what_to_do(pyramid_checkpoint: tuple[Any, Path]) -> None:
    _, directory = pyramid_checkpoint
    with pytest.raises(
        ConfigError, match=r"add_fpn=True feeds a 4-level pyramid from 4 stages, but the selection has 2"
    ):
        AutoBackbone.from_pretrained(directory, out_indices=[2, 4])


@pytest.mark.parametrize("mean_pooling", [True, False])
def test_classification_checkpoint_parity(tmp_path: Path, mean_pooling: bool) -> None:
    config = {**TINY, "use_relative_position_bias": True, "use_mean_pooling": mean_pooling}
    classifier = _reference(transformers.BeitForImageClassification, num_labels=5, **config)
    classifier.save_pretrained(tmp_path)
    ours, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[1, 2, 4], output_loading_info=True)
    assert report.missing_keys == []
    # Mean pooling normalises in the pooler, CLS pooling in a final layernorm; the backbone uses neither.
    pooling_norm = "beit.pooler.layernorm" if mean_pooling else "beit.layernorm"
    assert report.unused_keys == sorted(
        ["classifier.bias", "classifier.weight", f"{pooling_norm}.bias", f"{pooling_norm}.weight"]
    )
    assert report.prefix == ""
    reference = _reference_trunk(classifier, out_indices=[1, 2, 4], **config)
    for size in SIZES:
        pixels = _pixels(*size)
        with torch.no_grad():
            assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)


def test_pyramid_on_a_classification_checkpoint_is_initialised_as_transformers_does(tmp_path: Path) -> None:
    config = {**TINY, "use_relative_position_bias": True}
    classifier = _reference(transformers.BeitForImageClassification, num_labels=5, **config)
    classifier.save_pretrained(tmp_path)
    ours, report = AutoBackbone.from_pretrained(
        tmp_path, out_indices=[1, 2, 3, 4], add_fpn=True, output_loading_info=True
    )
    assert ours.config.fpn_indices == [1, 2, 3, 4] and ours.out_reductions == [2, 4, 8, 16]
    assert report.missing_keys == sorted(
        [f"fpn1.{i}.{kind}" for i in (0, 3) for kind in ("bias", "weight")]
        + [f"fpn1.1.{kind}" for kind in ("bias", "weight", "running_mean", "running_var", "num_batches_tracked")]
        + ["fpn2.0.bias", "fpn2.0.weight"]
    )
    norm = ours.fpn1[1]
    assert torch.equal(norm.weight, torch.ones(16)) and torch.equal(norm.bias, torch.zeros(16))
    assert torch.equal(norm.running_mean, torch.zeros(16)) and torch.equal(norm.running_var, torch.ones(16))
    assert torch.equal(ours.fpn2[0].bias, torch.zeros(16)) and 0.01 < ours.fpn2[0].weight.std() < 0.03
    # With the neck copied over, transformers' BeitBackbone gives the same maps.
    reference = _reference_trunk(classifier, neck_missing=True, out_indices=[1, 2, 3, 4], add_fpn=True, **config)
    reference.load_state_dict({_reference_name(k): v for k, v in ours.state_dict().items() if "fpn" in k}, strict=False)
    pixels = _pixels(32, 32)
    with torch.no_grad():
        assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)


def test_masked_image_modeling_checkpoint_parity(tmp_path: Path) -> None:
    # A pre-training checkpoint: shared bias, a mask token the backbone never uses, an LM head.
    config = {**TINY, "use_shared_relative_position_bias": True, "use_mask_token": True, "use_mean_pooling": False}
    pretrained = _reference(transformers.BeitForMaskedImageModeling, **config)
    pretrained.save_pretrained(tmp_path)
    ours, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[0, 3], output_loading_info=True)
    assert report.missing_keys == []
    assert report.unused_keys == [
        "beit.embeddings.mask_token",
        "beit.layernorm.bias",
        "beit.layernorm.weight",
        "layernorm.bias",
        "layernorm.weight",
        "lm_head.bias",
        "lm_head.weight",
    ]
    reference = _reference_trunk(pretrained, out_indices=[0, 3], **config)
    for size in SIZES[:2]:
        pixels = _pixels(*size)
        with torch.no_grad():
            assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)


def test_segmentation_checkpoint_loads_its_pyramid(tmp_path: Path) -> None:
    config = {**PYRAMID, "out_indices": [1, 2, 3, 4], "pool_scales": [1, 2], "auxiliary_channels": 8}
    segmenter = _reference(transformers.BeitForSemanticSegmentation, num_labels=3, **config)
    segmenter.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == []
    assert report.unused_keys == sorted(key for key in saved if key.startswith(("decode_head.", "auxiliary_head.")))
    reference = _reference_trunk(segmenter, **config)
    for size in SIZES[:2]:
        pixels = _pixels(*size)
        with torch.no_grad():
            assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)


def test_hidden_states_and_attentions_match(reference_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = reference_checkpoint
    reference.set_attn_implementation("eager")  # transformers' sdpa path returns no attention probabilities
    ours = AutoBackbone.from_pretrained(directory, out_indices=[2])
    pixels = _pixels(48, 40)
    try:
        with torch.no_grad():
            expected = reference(pixels, output_hidden_states=True, output_attentions=True)
            output = ours(pixels, output_hidden_states=True, output_attentions=True)
    finally:
        reference.set_attn_implementation("sdpa")
    # The stem and every layer as token sequences, CLS first; one attention map per layer.
    assert [tuple(state.shape) for state in output.hidden_states] == [(2, 31, 16)] * 5
    assert [tuple(weights.shape) for weights in output.attentions] == [(2, 2, 31, 31)] * 4
    assert_close_maps(output.hidden_states, expected.hidden_states, atol=1e-4)
    assert_close_maps(output.attentions, expected.attentions, atol=1e-5)
    assert_close_maps(output.feature_maps, [expected.feature_maps[2]], atol=1e-4)
    for weights in output.attentions:
        assert torch.allclose(weights.sum(-1), torch.ones(()))


def test_unreshaped_hidden_states_parity(tmp_path: Path) -> None:
    # reshape_hidden_states=False: each map is the stage's whole token sequence, CLS token included.
    reference = _reference(out_indices=[0, 4], reshape_hidden_states=False, use_relative_position_bias=True, **TINY)
    reference.save_pretrained(tmp_path)
    ours = AutoBackbone.from_pretrained(tmp_path)
    pixels = _pixels(48, 40)
    with torch.no_grad():
        maps = ours(pixels).feature_maps
        assert_close_maps(maps, reference(pixels).feature_maps, atol=1e-4)
    assert [tuple(fmap.shape) for fmap in maps] == [(2, 31, 16)] * 2


def test_saved_checkpoint_loads_into_transformers(tmp_path: Path) -> None:
    config = BeitConfig(
        **PYRAMID,
        out_indices=[1, 2, 3, 4],
        use_shared_relative_position_bias=True,
        use_absolute_position_embeddings=True,
    )
    ours = randomize_weights_(AutoBackbone.from_config(config)).eval()
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["BeitBackbone"] and saved["fpn_indices"] == [1, 2, 3, 4]
    # The concrete class: transformers' AutoBackbone.from_pretrained(local_dir) asks the hub first.
    reference, info = transformers.BeitBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert reference.out_indices == [1, 2, 3, 4]
    reference.eval()
    for size in SIZES:
        pixels = _pixels(*size)
        with torch.no_grad():
            assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-5)


def test_training_gradients_match(pyramid_checkpoint: tuple[Any, Path]) -> None:
    # Training mode: the bias is rebuilt with a graph every call, BatchNorm uses batch statistics.
    reference, directory = pyramid_checkpoint
    ours = AutoBackbone.from_pretrained(directory).train()
    reference.train()
    pixels = _pixels(48, 40)
    try:
        for model in (ours, reference):
            model.zero_grad()
            sum(fmap.pow(2).mean() for fmap in model(pixels).feature_maps).backward()
    finally:
        reference.eval()
    reference_grads = {name: p.grad for name, p in reference.named_parameters()}
    for name, parameter in ours.named_parameters():
        assert_close_maps([parameter.grad], [reference_grads.pop(_reference_name(name))], atol=1e-4)
    assert reference_grads == {}  # every parameter of theirs has one of ours


def test_drop_path_rates_and_training_only() -> None:
    config = BeitConfig(**{**TINY, "drop_path_rate": 0.3, "out_indices": [-1]})
    reference = transformers.BeitBackbone(transformers.BeitConfig.from_dict(config.to_dict()))
    # transformers uses an Identity where the rate is 0.
    expected = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in reference.beit.layers]
    model = randomize_weights_(BeitBackbone(config))
    assert [layer.drop_path for layer in model.beit.encoder.layer] == pytest.approx(expected)
    assert expected == pytest.approx([0.0, 0.1, 0.2, 0.3])
    pixels = _pixels(32, 32)
    torch.manual_seed(0)
    with torch.no_grad():
        first, second = (model.train()(pixels).feature_maps[0] for _ in range(2))
        third, fourth = (model.eval()(pixels).feature_maps[0] for _ in range(2))
    assert not torch.equal(first, second)
    assert torch.equal(third, fourth)


def test_checkpoint_with_saved_relative_position_index_loads(
    reference_checkpoint: tuple[Any, Path], tmp_path: Path
) -> None:
    # Checkpoints of older transformers releases hold the (derivable) index buffers; they are ignored.
    _, directory = reference_checkpoint
    state = load_file(directory / "model.safetensors")
    index_keys = [
        key.replace("relative_position_bias_table", "relative_position_index")
        for key in state
        if key.endswith("bias_table")
    ]
    state.update({key: torch.zeros(17, 17, dtype=torch.long) for key in index_keys})
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    _, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert len(index_keys) == 4
    assert report.clean, str(report)


# -- position tables ------------------------------------------------------------------------------


def test_bias_cache_follows_weight_updates_and_dtype() -> None:
    config = BeitConfig(**TINY, use_relative_position_bias=True, out_indices=[-1])
    model = randomize_weights_(BeitBackbone(config)).eval()
    pixels = _pixels(48, 40)
    with torch.no_grad():
        before = model(pixels).feature_maps[0]
        table = model.beit.encoder.layer[2].attention.attention.relative_position_bias.relative_position_bias_table
        table.add_(torch.randn_like(table))  # in place, as an optimiser step or load_state_dict does
        after = model(pixels).feature_maps[0]
        fresh = BeitBackbone(config).eval()
        fresh.load_state_dict(model.state_dict())
        assert not torch.allclose(before, after)
        assert torch.equal(after, fresh(pixels).feature_maps[0])
        doubled = model.double()(pixels.double()).feature_maps[0]
    assert doubled.dtype == torch.float64
    assert_close_maps([doubled], [after], atol=1e-5)


def test_relative_bias_gets_gradient_in_eval_mode() -> None:
    model = randomize_weights_(BeitBackbone(BeitConfig(**TINY, use_shared_relative_position_bias=True))).eval()
    with torch.no_grad():
        model(_pixels(32, 32))  # fills the cache
    model(_pixels(32, 32)).feature_maps[0].pow(2).sum().backward()
    table = model.beit.encoder.relative_position_bias.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_relative_bias_layout() -> None:
    # Query CLS -> patch, patch -> CLS and CLS -> CLS take the last three table rows; patch pairs take
    # the row of their offset (dy + 3) * 7 + (dx + 3) on the 4 x 4 grid.
    model = BeitBackbone(BeitConfig(**TINY, use_relative_position_bias=True)).eval()
    module = model.beit.encoder.layer[0].attention.attention.relative_position_bias
    with torch.no_grad():
        module.relative_position_bias_table.copy_(torch.arange(52.0)[:, None] * torch.tensor([1.0, -1.0]))
        bias = module(4, 4)
    assert bias.shape == (1, 2, 17, 17)
    assert torch.equal(bias[0, 1], -bias[0, 0])
    assert bias[0, 0, 0, 5].item() == 49 and bias[0, 0, 5, 0].item() == 50 and bias[0, 0, 0, 0].item() == 51
    # token 1 is (0, 0), token 7 is (1, 2): offset (-1, -2) -> (2 * 7 + 1).
    assert bias[0, 0, 1, 7].item() == 15 and bias[0, 0, 7, 1].item() == (4 * 7 + 5)


def test_non_square_pretraining_size() -> None:
    # transformers assumes a square pre-training grid (it reshapes the tables as squares and fails or
    # scrambles them otherwise); here the grid is H x W, so a 32 x 48 model is self-consistent.
    config = BeitConfig(
        **{**TINY, "image_size": [32, 48]},
        use_relative_position_bias=True,
        use_absolute_position_embeddings=True,
        out_indices=[-1],
    )
    model = randomize_weights_(BeitBackbone(config)).eval()
    module = model.beit.encoder.layer[0].attention.attention.relative_position_bias
    assert module.relative_position_bias_table.shape == (7 * 11 + 3, 2)
    assert model.beit.embeddings.position_embeddings.shape == (1, 4 * 6 + 1, 16)
    with torch.no_grad():
        table = module.relative_position_bias_table
        # At the pre-training grid the table is read as is (resampling to the same size is the identity).
        assert torch.equal(module(4, 6), module._resampled_table(4, 6).t()[:, module.grid_index][None])
        assert torch.equal(module(4, 6)[0, :, 0, 0], table[-1])
        maps = [model(_pixels(*size)).feature_maps[0] for size in [(32, 48), (40, 40)]]
    assert [tuple(fmap.shape) for fmap in maps] == [(2, 16, 4, 6), (2, 16, 5, 5)]


# -- selection and pruning ------------------------------------------------------------------------


def test_pruning_drops_deeper_layers_and_levels() -> None:
    model = BeitBackbone(BeitConfig(**PYRAMID, fpn_indices=[1, 2, 3, 4], out_indices=[0, 2]))
    assert model.prune_unused_stages() == ["stage3", "stage4"]
    assert len(model.beit.encoder.layer) == 2
    keys = set(model.state_dict())
    assert any(key.startswith("fpn1.") for key in keys) and any(key.startswith("fpn2.") for key in keys)
    assert not any(key.startswith(("beit.encoder.layer.2.", "beit.encoder.layer.3.")) for key in keys)
    assert not hasattr(model, "fpn3") and not hasattr(model, "fpn4")
    with torch.no_grad():
        maps = model(_pixels(32, 32)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(2, 16, 4, 4), (2, 16, 8, 8)]


def test_truncated_forward_skips_deeper_layers() -> None:
    model = BeitBackbone(BeitConfig(**TINY, out_indices=[1]))
    calls: list[int] = []
    for index, layer in enumerate(model.beit.encoder.layer):
        layer.register_forward_hook(lambda *_, index=index: calls.append(index))
    with torch.no_grad():
        model(_pixels(32, 32))
    assert calls == [0]


# -- default size ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_beit_base_feature_map_shapes() -> None:
    config = BeitConfig(add_fpn=True, fpn_indices=[3, 5, 7, 11], out_indices=[3, 5, 7, 11, 12])
    model = AutoBackbone.from_config(config).eval()
    assert model.channels == [768] * 5 and model.out_reductions == [4, 8, 16, 32, 16]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [
        (1, 768, 56, 56),
        (1, 768, 28, 28),
        (1, 768, 14, 14),
        (1, 768, 7, 7),
        (1, 768, 14, 14),
    ]


# -- config ---------------------------------------------------------------------------------------


def test_transformers_config_json_round_trips(
    reference_checkpoint: tuple[Any, Path], pyramid_checkpoint: tuple[Any, Path]
) -> None:
    saved = json.loads((reference_checkpoint[1] / "config.json").read_text())
    config = BeitConfig.from_dict(saved)
    assert config.out_indices == ALL_STAGES and config.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    # Head fields (pool_scales, vocab_size, ...) are kept as they were; the forward defaults are added.
    defaults = {"output_attentions": False, "output_hidden_states": False, "return_dict": True}
    assert config.to_dict() == {**saved, **defaults}
    saved = json.loads((pyramid_checkpoint[1] / "config.json").read_text())
    assert BeitConfig.from_dict(saved).to_dict() == {**saved, **defaults, "fpn_indices": [1, 2, 3, 4]}


def test_legacy_segmentation_indices_select_stages() -> None:
    assert BeitConfig(**TINY, segmentation_indices=[1, 3]).out_indices == [1, 3]
    assert BeitConfig(**TINY, segmentation_indices=[1, 3], out_indices=[2]).out_indices == [2]


def test_config_accepts_square_patch_pair_and_image_pair() -> None:
    config = BeitConfig(patch_size=[16, 16], image_size=[224, 320])
    assert config.patch_size == 16 and config.patch_grid == (14, 20)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_attention_heads": 3}, r"num_attention_heads=3 does not divide hidden_size=16; choose a head count"),
        ({"hidden_act": "swishy"}, r"hidden_act 'swishy' is not supported; set hidden_act to one of"),
        ({"patch_size": [8, 4]}, r"patch_size must be one int or a square pair"),
        ({"image_size": 4}, r"image_size 4 is smaller than patch_size=8"),
        ({"num_hidden_layers": 0}, r"num_hidden_layers=0: Input should be greater than or equal to 1"),
        ({"layer_scale_init_value": -0.1}, r"layer_scale_init_value=-0.1: Input should be greater than or equal to 0"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate=1.0: Input should be less than 1"),
        (
            {"add_fpn": True},
            r"add_fpn=True feeds a 4-level pyramid from 4 stages, but the selection has 1 \(\['stage4'\]\)",
        ),
        ({"add_fpn": True, "fpn_indices": [1, 2, 3]}, r"fpn_indices must list 4 stages \(one per pyramid level\)"),
        (
            {"add_fpn": True, "fpn_indices": [1, 2, 3, 9]},
            r"fpn_indices \[1, 2, 3, 9\] has indices outside the 5 stages",
        ),
        ({"add_fpn": True, "fpn_indices": [1, 2, 2, 4]}, r"fpn_indices \[1, 2, 2, 4\] names a stage twice"),
        ({"add_fpn": True, "fpn_indices": [4, 1, 2, 3]}, r"must go from shallow to deep .*use \[1, 2, 3, 4\]"),
        (
            {"add_fpn": True, "fpn_indices": [1, 2, 3, 4], "patch_size": 6, "image_size": 36},
            r"patch_size divisible by 4",
        ),
        (
            {"add_fpn": True, "fpn_indices": [1, 2, 3, 4], "reshape_hidden_states": False},
            r"add_fpn=True needs reshape_hidden_states=True",
        ),
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BeitConfig(**{**TINY, **overrides})


def test_enabling_pyramid_later_needs_its_stages() -> None:
    config = BeitConfig(**TINY)
    with pytest.raises(ConfigError, match=r"add_fpn=True needs the four stages that feed the pyramid: set fpn_indices"):
        config.add_fpn = True
    assert config.add_fpn is False
    config.fpn_indices = [1, 2, 3, 4]
    config.add_fpn = True
    assert config.fpn_positions == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"fpn_indices \[1, 2, 3, 4\] has indices outside the 4 stages"):
        config.num_hidden_layers = 3


def test_bad_config_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "beit", **TINY, "num_attention_heads": 5}))
    with pytest.raises(
        ConfigError,
        match=r"invalid backbone config in .*config.json: .*num_attention_heads=5 does not divide hidden_size",
    ):
        AutoBackbone.from_pretrained(tmp_path)
