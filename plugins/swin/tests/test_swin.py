"""Tests of backbones-swin: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone
from backbones.testing import BackboneConformance, assert_close_maps, randomize_weights_
from backbones_swin import SwinBackbone, SwinConfig

transformers = pytest.importorskip("transformers")

# Two stages: enough for regular and shifted windows, patch merging, and a single-window stage.
TINY: dict[str, Any] = {
    "embed_dim": 16,
    "depths": [1, 2],
    "num_heads": [2, 4],
    "window_size": 4,
    "patch_size": 4,
    "image_size": 32,
    "drop_path_rate": 0.0,
}
# Three stages (four stage names), for selections such as [1, 3].
SMALL: dict[str, Any] = {**TINY, "depths": [1, 2, 2], "num_heads": [2, 2, 4]}
ALL_STAGES = [0, 1, 2, 3]
# transformers 5.x renames the on-disk attention/MLP keys in memory; ours keep the on-disk names.
_REFERENCE_RENAMES = (
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)


def _pixels(height: int, width: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _reference(model_class: Any = None, **config: Any) -> Any:
    """A transformers Swin model with every weight re-randomised, in eval mode."""
    model_class = model_class or transformers.SwinBackbone
    model = model_class(transformers.SwinConfig(**config))
    return randomize_weights_(model, seed=3).eval()


def _our_name(reference_name: str) -> str:
    for old, new in _REFERENCE_RENAMES:
        reference_name = reference_name.replace(old, new)
    return reference_name


class TestSwinConformance(BackboneConformance):
    model_type = "swin"
    # 40 x 56 gives a 10 x 14 patch grid: not a multiple of the window, so every stage pads.
    input_sizes = ((32, 32), (40, 56))
    # torch.export / ONNX with dynamic H and W: any size whose deepest stage map is at least 2 wide, i.e.
    # above the deepest stride (8 here). The forward has no branch on the size (maps are padded to whole
    # windows; windows never shrink to the map), but a map axis of exactly 1 is a different case to the
    # tracer (a size-1 axis broadcasts), so one program cannot hold for 1 and for larger sizes at once.
    export_range = (9, 1024)

    def make_config(self, **overrides: Any) -> SwinConfig:
        return SwinConfig(**{**TINY, **overrides})


# -- parity with transformers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """transformers' SwinBackbone (all stages selected) saved by transformers itself."""
    reference = _reference(out_indices=ALL_STAGES, **SMALL)
    directory = tmp_path_factory.mktemp("reference")
    reference.save_pretrained(directory)
    return reference, directory


@pytest.mark.parametrize("out_indices", [ALL_STAGES, [-1], [1, 3]])
def test_backbone_checkpoint_parity(reference_checkpoint: tuple[Any, Path], out_indices: list[int]) -> None:
    reference, directory = reference_checkpoint
    ours, report = AutoBackbone.from_pretrained(directory, out_indices=out_indices, output_loading_info=True)
    assert isinstance(ours, SwinBackbone)
    selected = [ours.stage_names[index] for index in out_indices]
    assert ours.out_features == selected
    assert report.missing_keys == []
    unselected_norms = [
        f"hidden_states_norms.{name}.{kind}"
        for name in ours.stage_names
        if name not in selected
        for kind in ("bias", "weight")
    ]
    assert report.unused_keys == sorted(["swin.layernorm.bias", "swin.layernorm.weight", *unselected_norms])
    positions = [index % 4 for index in out_indices]
    # 32: whole windows; 36 x 52: a 9 x 13 grid, padded in every stage; 38 x 50: not a patch multiple.
    for size in [(32, 32), (36, 52), (38, 50)]:
        pixels = _pixels(*size)
        with torch.no_grad():
            expected = reference(pixels).feature_maps
            maps = ours(pixels).feature_maps
        assert_close_maps(maps, [expected[position] for position in positions], atol=1e-4)


def test_checkpoint_with_saved_relative_position_index_loads(
    reference_checkpoint: tuple[Any, Path], tmp_path: Path
) -> None:
    # Checkpoints written before transformers 5 hold the (derivable) index buffer; it is ignored.
    _, directory = reference_checkpoint
    state = load_file(directory / "model.safetensors")
    index_keys = [
        key.replace("relative_position_bias_table", "relative_position_index")
        for key in state
        if key.endswith("bias_table")
    ]
    state.update({key: torch.zeros(16, 16, dtype=torch.long) for key in index_keys})
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    _, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert len(index_keys) == 5
    assert report.missing_keys == []
    assert report.unused_keys == ["swin.layernorm.bias", "swin.layernorm.weight"]


def test_task_checkpoint_parity(tmp_path: Path) -> None:
    classifier = _reference(transformers.SwinForImageClassification, num_labels=5, **SMALL)
    classifier.save_pretrained(tmp_path)
    ours, report = AutoBackbone.from_pretrained(tmp_path, out_indices=[1, 2, 3], output_loading_info=True)
    assert report.missing_keys == [
        f"hidden_states_norms.stage{i}.{kind}" for i in (1, 2, 3) for kind in ("bias", "weight")
    ]
    assert report.unused_keys == [
        "classifier.bias",
        "classifier.weight",
        "swin.layernorm.bias",
        "swin.layernorm.weight",
    ]
    for norm in ours.hidden_states_norms.values():
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(
            norm.bias, torch.zeros_like(norm.bias)
        )
    # The reference: transformers' SwinBackbone holding the classifier's trunk, its own norms at 1 / 0.
    # (transformers' AutoBackbone.from_pretrained(local_dir) asks the hub first and fails offline.)
    reference = transformers.SwinBackbone(transformers.SwinConfig(out_indices=[1, 2, 3], **SMALL)).eval()
    trunk = {key: value for key, value in classifier.state_dict().items() if key.startswith("swin.")}
    result = reference.load_state_dict(trunk, strict=False)
    assert sorted(result.missing_keys) == sorted(report.missing_keys) and result.unexpected_keys == []
    pixels = _pixels(36, 52)
    with torch.no_grad():
        worst = assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)
    assert worst < 1e-4


def test_hidden_states_and_attentions_match(reference_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = reference_checkpoint
    reference.set_attn_implementation("eager")  # sdpa returns no attention probabilities
    ours = AutoBackbone.from_pretrained(directory)
    pixels = _pixels(36, 52)
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True, output_attentions=True)
        output = ours(pixels, output_hidden_states=True, output_attentions=True)
    assert len(output.hidden_states) == len(expected.hidden_states) == 4
    assert_close_maps(output.hidden_states, expected.hidden_states, atol=1e-4)
    # One per stage: the last block's probabilities, (batch * windows, heads, N, N).
    assert [tuple(a.shape) for a in output.attentions] == [(2 * 12, 2, 16, 16), (2 * 4, 2, 16, 16), (2, 4, 16, 16)]
    assert_close_maps(output.attentions, expected.attentions, atol=1e-5)
    assert_close_maps(output.feature_maps, expected.feature_maps, atol=1e-4)
    # Attentions cover every stage even when only a shallow one is selected, as in transformers.
    ours.out_indices = [1]
    with torch.no_grad():
        shallow = ours(pixels, output_attentions=True)
    assert_close_maps(shallow.attentions, expected.attentions, atol=1e-5)


def test_saved_checkpoint_loads_into_transformers(tmp_path: Path) -> None:
    ours = randomize_weights_(AutoBackbone.from_config(SwinConfig(out_indices=[0, 2, 3], **SMALL))).eval()
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["SwinBackbone"] and config["hidden_size"] == 64 and config["num_layers"] == 3
    # The concrete class: transformers' AutoBackbone.from_pretrained(local_dir) asks the hub first.
    reference, info = transformers.SwinBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert reference.out_indices == [0, 2, 3]
    pixels = _pixels(36, 52)
    with torch.no_grad():
        assert_close_maps(ours(pixels).feature_maps, reference.eval()(pixels).feature_maps, atol=1e-5)


def test_training_gradients_match(reference_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = reference_checkpoint
    ours = AutoBackbone.from_pretrained(directory).train()
    reference.train()
    pixels = _pixels(36, 52)
    for model in (ours, reference):
        model.zero_grad()
        sum(fmap.pow(2).mean() for fmap in model(pixels).feature_maps).backward()
    reference.eval()
    ours_grads = {name: p.grad for name, p in ours.named_parameters()}
    compared = 0
    for name, parameter in reference.named_parameters():
        if name.startswith("swin.layernorm."):
            assert parameter.grad is None
            continue
        assert_close_maps([ours_grads[_our_name(name)]], [parameter.grad], atol=1e-4)
        compared += 1
    assert compared == len(ours_grads)


def test_absolute_position_embeddings_match(tmp_path: Path) -> None:
    reference = _reference(out_indices=[0, 2], use_absolute_embeddings=True, **TINY)
    reference.save_pretrained(tmp_path)
    ours, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert "swin.embeddings.position_embeddings" not in report.unused_keys
    pixels = _pixels(32, 32)
    with torch.no_grad():
        assert_close_maps(ours(pixels).feature_maps, reference(pixels).feature_maps, atol=1e-4)
        # Another size: the 8 x 8 position grid is resampled (transformers would raise here).
        maps = ours(_pixels(48, 40)).feature_maps
    assert [tuple(m.shape) for m in maps] == [(2, 16, 12, 10), (2, 32, 6, 5)]


def test_drop_path_rates_and_training_only() -> None:
    config = SwinConfig(**{**SMALL, "drop_path_rate": 0.5, "out_indices": [-1]})
    reference = transformers.SwinBackbone(transformers.SwinConfig.from_dict(config.to_dict()))
    # transformers uses an Identity where the rate is 0.
    expected = [
        getattr(block.drop_path, "drop_prob", 0.0) for layer in reference.swin.encoder.layers for block in layer.blocks
    ]
    model = randomize_weights_(SwinBackbone(config))
    assert [block.drop_path for layer in model.swin.encoder.layers for block in layer.blocks] == expected
    assert expected == [0.0, 0.125, 0.25, 0.375, 0.5]
    pixels = _pixels(32, 32)
    torch.manual_seed(0)
    with torch.no_grad():
        first, second = (model.train()(pixels).feature_maps[0] for _ in range(2))
        third, fourth = (model.eval()(pixels).feature_maps[0] for _ in range(2))
    assert not torch.equal(first, second)
    assert torch.equal(third, fourth)


# -- attention-bias cache -------------------------------------------------------------------------


def test_cache_follows_weight_updates_and_dtype() -> None:
    model = randomize_weights_(SwinBackbone(SwinConfig(out_indices=[-1], **TINY))).eval()
    pixels = _pixels(32, 32)
    with torch.no_grad():
        before = model(pixels).feature_maps[0]
        table = model.swin.encoder.layers[1].blocks[1].attention.self.relative_position_bias_table
        table.add_(torch.randn_like(table))  # in place, as an optimiser step or load_state_dict does
        after = model(pixels).feature_maps[0]
        fresh = SwinBackbone(SwinConfig(out_indices=[-1], **TINY)).eval()
        fresh.load_state_dict(model.state_dict())
        assert not torch.allclose(before, after)
        assert torch.equal(after, fresh(pixels).feature_maps[0])
        doubled = model.double()(pixels.double()).feature_maps[0]
    assert doubled.dtype == torch.float64
    assert_close_maps([doubled], [after], atol=1e-5)


def test_relative_bias_gets_gradient_in_eval_mode() -> None:
    model = randomize_weights_(SwinBackbone(SwinConfig(out_indices=[-1], **TINY))).eval()
    with torch.no_grad():
        model(_pixels(32, 32))  # fills the cache
    model(_pixels(32, 32)).feature_maps[0].pow(2).sum().backward()
    table = model.swin.encoder.layers[1].blocks[1].attention.self.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0


# -- selection and pruning ------------------------------------------------------------------------


def test_reassigning_out_features_follows_norms() -> None:
    model = randomize_weights_(SwinBackbone(SwinConfig(out_indices=[-1], **SMALL))).eval()
    model.out_indices = [1, 2]
    assert sorted(model.hidden_states_norms) == ["stage1", "stage2"]
    norm = model.hidden_states_norms["stage1"]
    assert torch.equal(norm.weight, torch.ones(16)) and torch.equal(norm.bias, torch.zeros(16))
    fresh = SwinBackbone(SwinConfig(out_indices=[1, 2], **SMALL)).eval()
    fresh.load_state_dict(model.state_dict())  # strict: the same keys as a model built for [1, 2]
    pixels = _pixels(32, 32)
    with torch.no_grad():
        assert_close_maps(model(pixels).feature_maps, fresh(pixels).feature_maps, atol=0.0)


def test_pruning_drops_unused_downsample() -> None:
    model = SwinBackbone(SwinConfig(out_indices=[1], **SMALL))
    assert model.prune_unused_stages() == ["stage2", "stage3"]
    assert len(model.swin.encoder.layers) == 1 and model.swin.encoder.layers[0].downsample is None
    assert not any(
        key.startswith(("swin.encoder.layers.1.", "swin.encoder.layers.0.downsample")) for key in model.state_dict()
    )


# -- default size ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_swin_tiny_feature_map_shapes() -> None:
    model = AutoBackbone.from_config(SwinConfig(out_indices=[1, 2, 3, 4])).eval()
    assert model.channels == [96, 192, 384, 768] and model.out_reductions == [4, 8, 16, 32]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]


# -- config ---------------------------------------------------------------------------------------


def test_transformers_config_json_round_trips(reference_checkpoint: tuple[Any, Path]) -> None:
    _, directory = reference_checkpoint
    saved = json.loads((directory / "config.json").read_text())
    config = SwinConfig.from_dict(saved)
    assert config.depths == [1, 2, 2] and config.out_indices == ALL_STAGES
    assert (config.hidden_size, config.num_layers) == (64, 3)
    written = config.to_dict()
    assert {key: value for key, value in written.items() if key in saved} == saved  # extras and derived values kept


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_heads": [2, 4, 8]}, "num_heads has 3 entries but depths has 2"),
        ({"embed_dim": 18, "num_heads": [4, 4]}, r"num_heads\[0\]=4 must be a positive divisor of stage 1's width"),
        ({"depths": []}, "depths must list at least one stage"),
        ({"hidden_act": "swishy"}, "hidden_act 'swishy' is not supported"),
        ({"patch_size": [4, 2]}, r"patch_size must be one int or a square pair"),
        ({"window_size": 0}, "window_size=0: Input should be greater than or equal to 1"),
        ({"drop_path_rate": 1.0}, "drop_path_rate=1.0: Input should be less than 1"),
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SwinConfig(**{**TINY, **overrides})


def test_config_accepts_square_patch_pair() -> None:
    assert SwinConfig(patch_size=[4, 4]).patch_size == 4
