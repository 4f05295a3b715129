"""Tests of backbones-dinov3-convnext: the conformance kit, parity with transformers (backbone and
DINOv3ConvNextModel checkpoints), config errors, and the real-size configs on the meta device."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from backbones import AutoBackbone, AutoBackboneConfig, ConfigError
from backbones.testing import (
    BackboneConformance,
    ProcessorParity,
    TransformersParity,
    assert_parity,
    assert_random_only_in_training,
    imagenet_preprocessor,
    randomize_weights_,
)
from backbones_dinov3_convnext import DINOv3ConvNextBackbone, DINOv3ConvNextConfig

TINY: dict[str, Any] = {"hidden_sizes": [8, 12, 16, 24], "depths": [1, 1, 2, 1], "image_size": 64}
SMALL: dict[str, Any] = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1], "image_size": 64}
# The training size of the test configs, and a size that is no multiple of the stride 32 (every
# downsampling convolution floors it).
SIZES = ((64, 64), (70, 100))
SOURCE = Path(__file__).resolve().parents[1] / "src" / "backbones_dinov3_convnext"


def pixels(height: int = 64, width: int = 64, batch: int = 2, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# -- conformance ------------------------------------------------------------------------------------


class TestDINOv3ConvNextConformance(BackboneConformance):
    model_type = "dinov3_convnext"
    input_sizes = ((64, 64), (96, 80))
    # The patchify and downsampling convolutions do not pad: a map of stride s is size // s wide.
    spatial_rounding = "floor"
    channel_error_name = "DINOv3 ConvNeXt"
    bad_config_value = ("drop_path_rate", 1.5, r"drop_path_rate=1\.5: Input should be less than 1")

    def make_config(self, **overrides: Any) -> DINOv3ConvNextConfig:
        return DINOv3ConvNextConfig(**TINY, **overrides)


class TestDINOv3ConvNextThreeStagesConformance(TestDINOv3ConvNextConformance):
    """Three stages, SiLU, another norm epsilon: the same graph as above but for its length."""

    deployment_checks = False  # the slow checks would add nothing to the class above

    def make_config(self, **overrides: Any) -> DINOv3ConvNextConfig:
        options = {"hidden_sizes": [8, 16, 24], "depths": [2, 1, 1], "hidden_act": "silu", "layer_norm_eps": 1e-5}
        return DINOv3ConvNextConfig(**options, **overrides)


# -- parity with transformers -----------------------------------------------------------------------


class TestDINOv3ConvNextParity(TransformersParity):
    backbone_class = DINOv3ConvNextBackbone
    # transformers has no classification model for DINOv3 ConvNeXt: its task checkpoint is the hub's
    # DINOv3ConvNextModel (the trunk plus a LayerNorm over the pooled and patch tokens).
    reference_task_class = "DINOv3ConvNextModel"
    config = SMALL
    variants = {
        "default": {},
        "silu-eps-layer-scale": {"hidden_act": "silu", "layer_norm_eps": 1e-5, "layer_scale_init_value": 0.5},
    }
    input_sizes = SIZES
    out_indices = ((0, 1, 2, 3, 4), (1, 2, 3, 4), (2,), (-1,), (0,))
    backbone_prefix = ""  # the keys match as they are
    hidden_state_count = 5
    # The stem's hidden state is the input image itself, as in transformers.
    hidden_state_shapes = ((2, 3, 64, 64), (2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4), (2, 32, 2, 2))
    task_variants = ("default", "silu-eps-layer-scale")
    task_out_indices = (1, 2, 3, 4)
    task_options: dict[str, Any] = {}
    # The pooled-token norm of DINOv3ConvNextModel, which a backbone never runs.
    task_unused_keys = ("layer_norm.bias", "layer_norm.weight")
    task_prefix = ""  # DINOv3ConvNextModel's files hold the trunk under no prefix
    round_trip_out_indices = (0, 2, 4)
    compare_gradients = True
    # transformers nests the stages under ``model.`` in memory (its files hold our names).
    key_renames = ((r"^stages\.", "model.stages."),)

    def test_stem_is_the_input_image(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """transformers' stem is the pixel values themselves: the same tensor, 3 channels, stride 1."""
        directory, _ = self.reference_checkpoint("default", tmp_path_factory)
        model = AutoBackbone.from_pretrained(directory, out_indices=[0, 1])
        inputs = self.pixels((70, 100))
        with torch.no_grad():
            output = model(inputs, output_hidden_states=True)
        assert output.feature_maps[0] is inputs and output.hidden_states[0] is inputs
        assert model.channels == [3, 8] and model.out_reductions == [1, 4]
        assert [tuple(state.shape[2:]) for state in output.hidden_states] == [
            (70, 100),
            (17, 25),
            (8, 12),
            (4, 6),
            (2, 3),
        ]

    def test_two_stage_network_matches(self, tmp_path: Path) -> None:
        """Any number of stages: two here, every stage selected, at both sizes."""
        options = {"hidden_sizes": [8, 16], "depths": [2, 1]}
        reference = self.reference_model("DINOv3ConvNextBackbone", "default", **options, out_indices=[0, 1, 2])
        reference.save_pretrained(tmp_path)
        model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
        assert report.clean and model.stage_names == ["stem", "stage1", "stage2"]
        for size in self.input_sizes:
            inputs = self.pixels(size)
            with torch.no_grad():
                assert_parity(model(inputs).feature_maps, reference(inputs).feature_maps)


def test_checkpoint_of_transformers_in_memory_names_loads(tmp_path: Path) -> None:
    """A state dict saved as transformers holds it in memory (``model.stages.N``) loads like the hub's."""
    config = transformers.DINOv3ConvNextConfig(**SMALL, out_indices=[2, 4])
    reference = randomize_weights_(transformers.DINOv3ConvNextBackbone(config)).eval()
    state = {key: value.contiguous() for key, value in reference.state_dict().items()}
    assert "model.stages.1.layers.1.depthwise_conv.weight" in state
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    DINOv3ConvNextConfig(**SMALL, out_indices=[2, 4]).save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == [] and report.unused_keys == []
    assert report.prefix == "keys renamed"
    inputs = pixels()
    with torch.no_grad():
        assert_parity(model(inputs).feature_maps, reference(inputs).feature_maps)


def test_transformers_config_file_is_read_as_it_is(tmp_path: Path) -> None:
    transformers.DINOv3ConvNextConfig(**SMALL, hidden_act="silu", out_indices=[1, 3]).save_pretrained(tmp_path)
    config = AutoBackboneConfig.from_pretrained(tmp_path)
    assert type(config) is DINOv3ConvNextConfig
    assert config.hidden_sizes == [8, 16, 24, 32] and config.depths == [1, 2, 1, 1] and config.hidden_act == "silu"
    assert config.out_features == ["stage1", "stage3"] and config.layer_norm_eps == 1e-6
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]


def test_saved_config_is_transformers_format(tmp_path: Path) -> None:
    DINOv3ConvNextConfig(**SMALL, out_indices=[1, 2]).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "dinov3_convnext" and data["out_indices"] == [1, 2]
    config = transformers.DINOv3ConvNextConfig.from_pretrained(tmp_path)
    assert config.hidden_sizes == [8, 16, 24, 32] and config.depths == [1, 2, 1, 1]
    assert config.out_features == ["stage1", "stage2"] and config.num_stages == 4


# -- behaviour --------------------------------------------------------------------------------------


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = AutoBackbone.from_config(DINOv3ConvNextConfig(**SMALL, layer_scale_init_value=0.25))
    layer = model.stages[1].layers[1]
    assert torch.equal(layer.gamma, torch.full((16,), 0.25))
    assert torch.equal(layer.layer_norm.weight, torch.ones(16)) and torch.equal(layer.layer_norm.bias, torch.zeros(16))
    assert torch.equal(layer.pointwise_conv1.bias, torch.zeros(64))
    assert layer.pointwise_conv1.weight.std().item() == pytest.approx(0.02, rel=0.15)
    norm = model.stages[2].downsample_layers[0]
    assert norm.eps == 1e-6 and torch.equal(norm.weight, torch.ones(16))


def test_every_block_has_its_scale_even_at_zero() -> None:
    """transformers builds ``gamma`` whatever layer_scale_init_value is (0 makes every block the identity)."""
    model = AutoBackbone.from_config(DINOv3ConvNextConfig(**SMALL, layer_scale_init_value=0.0, out_indices=[1])).eval()
    keys = [key for key in model.state_dict() if key.endswith("gamma")]
    assert keys == [f"stages.{s}.layers.{b}.gamma" for s, depth in enumerate(SMALL["depths"]) for b in range(depth)]
    inputs = pixels()
    with torch.no_grad():
        (fmap,) = model(inputs).feature_maps
        patchified = model.stages[0].downsample_layers(inputs)
    assert torch.equal(fmap, patchified)


def test_stochastic_depth_follows_transformers_schedule_in_training_only() -> None:
    config = DINOv3ConvNextConfig(**SMALL, drop_path_rate=0.5, out_indices=[4])
    model = randomize_weights_(AutoBackbone.from_config(config))
    reference = transformers.DINOv3ConvNextBackbone(transformers.DINOv3ConvNextConfig(**SMALL, drop_path_rate=0.5))
    theirs = [getattr(layer.drop_path, "drop_prob", 0.0) for stage in reference.model.stages for layer in stage.layers]
    ours = [layer.drop_path_rate for stage in model.stages for layer in stage.layers]
    assert ours == pytest.approx(theirs) and ours == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    assert_random_only_in_training(model, pixels())


def test_freezing_the_stem_freezes_the_patchify_layer() -> None:
    model = AutoBackbone.from_config(DINOv3ConvNextConfig(**SMALL))
    assert model.freeze_stages(1) == ["stem"]
    frozen = sorted(name for name, parameter in model.named_parameters() if not parameter.requires_grad)
    assert frozen == [f"stages.0.downsample_layers.{i}.{kind}" for i in (0, 1) for kind in ("bias", "weight")]
    model.freeze_stages(2)
    assert all(not p.requires_grad for p in model.stages[0].parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())


def test_pruning_keeps_only_the_stages_that_run() -> None:
    model = AutoBackbone.from_config(DINOv3ConvNextConfig(**SMALL, out_indices=[2]))
    assert model.prune_unused_stages() == ["stage3", "stage4"]
    assert len(model.stages) == 2
    with torch.no_grad():
        (fmap,) = model(pixels()).feature_maps
    assert tuple(fmap.shape) == (2, 16, 8, 8)
    stem_only = AutoBackbone.from_config(DINOv3ConvNextConfig(**SMALL, out_indices=[0]))
    assert stem_only.prune_unused_stages() == ["stage1", "stage2", "stage3", "stage4"]
    assert len(stem_only.stages) == 0 and stem_only.freeze_stages(1) == ["stem"]


def test_imports_only_public_names_of_backbones_convnext() -> None:
    """The downsampling norms are backbones-convnext's public block: no ``_``-prefixed module or name of it."""
    imported = []
    for path in sorted(SOURCE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backbones_convnext"):
                imported.append((node.module, [alias.name for alias in node.names]))
    assert imported == [("backbones_convnext.blocks", ["ChannelsFirstLayerNorm"])]


# -- real sizes -------------------------------------------------------------------------------------

# The four released DINOv3 ConvNeXts (facebook/dinov3-convnext-<size>-pretrain-lvd1689m): widths, depths,
# our parameter count (transformers' DINOv3ConvNextBackbone's too) and the DINOv3 paper's rounded count.
REAL_SIZES = {
    "tiny": ([96, 192, 384, 768], [3, 3, 9, 3], 27_818_592, 29e6),
    "small": ([96, 192, 384, 768], [3, 3, 27, 3], 49_453_152, 50e6),
    "base": ([128, 256, 512, 1024], [3, 3, 27, 3], 87_564_416, 89e6),
    "large": ([192, 384, 768, 1536], [3, 3, 27, 3], 196_227_264, 198e6),
}


@pytest.mark.parametrize("size", list(REAL_SIZES))
def test_real_sizes_build_on_the_meta_device(size: str) -> None:
    widths, depths, count, published = REAL_SIZES[size]
    config = DINOv3ConvNextConfig(hidden_sizes=widths, depths=depths, out_indices=[1, 2, 3, 4])
    with torch.device("meta"):
        model = AutoBackbone.from_config(config)
        maps = model(torch.empty(1, 3, 224, 224)).feature_maps
        reference = transformers.DINOv3ConvNextBackbone(
            transformers.DINOv3ConvNextConfig(hidden_sizes=widths, depths=depths)
        )
    assert all(p.device.type == "meta" for p in model.parameters())
    assert [tuple(fmap.shape) for fmap in maps] == [
        (1, width, 224 // s, 224 // s) for width, s in zip(widths, (4, 8, 16, 32))
    ]
    assert model.channels == widths and model.out_reductions == [4, 8, 16, 32]
    ours = sum(p.numel() for p in model.parameters())
    assert ours == sum(p.numel() for p in reference.parameters()) == count
    # The paper rounds to whole millions (tiny: 27.8M is its "29M", 4% off; the others within 2%).
    assert abs(ours / published - 1) < 0.05


def test_default_config_is_convnext_tiny_at_224() -> None:
    """The default config at its real size: maps of a 224x224 image, on the meta device."""
    config = DINOv3ConvNextConfig(out_indices=[0, 1, 2, 3, 4])
    with torch.device("meta"):
        model = AutoBackbone.from_config(config)
        maps = model(torch.empty(2, 3, 224, 224)).feature_maps
    expected = [(2, 3, 224, 224), (2, 96, 56, 56), (2, 192, 28, 28), (2, 384, 14, 14), (2, 768, 7, 7)]
    assert [tuple(fmap.shape) for fmap in maps] == expected
    assert model.channels == [3, 96, 192, 384, 768] and model.out_reductions == [1, 4, 8, 16, 32]


@pytest.mark.slow
def test_default_config_matches_transformers_at_224(tmp_path: Path) -> None:
    """The default config (dinov3-convnext-tiny) for real: transformers' randomised checkpoint at 224x224."""
    reference = randomize_weights_(
        transformers.DINOv3ConvNextBackbone(transformers.DINOv3ConvNextConfig(out_indices=[1, 2, 3, 4]))
    ).eval()
    reference.save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.clean and (model.config.hidden_sizes, model.config.depths) == ([96, 192, 384, 768], [3, 3, 9, 3])
    inputs = pixels(224, 224, batch=1)
    with torch.no_grad():
        maps = model(inputs).feature_maps
        assert_parity(maps, reference(inputs).feature_maps)
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]


# -- config errors ----------------------------------------------------------------------------------


def test_one_width_per_depth() -> None:
    # transformers accepts this config and fails later, building or running the model.
    with pytest.raises(ConfigError, match=r"hidden_sizes has 3 entries but depths has 4; give one channel count"):
        DINOv3ConvNextConfig(hidden_sizes=[8, 16, 24], depths=[1, 1, 1, 1])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depths", [1, 0, 1, 1], r"depths must list one positive integer per stage, got \[1, 0, 1, 1\]"),
        ("hidden_sizes", [], r"hidden_sizes must list one positive integer per stage, got \[\]"),
        ("drop_path_rate", 1.0, "Input should be less than 1"),
        ("drop_path_rate", -0.1, "Input should be greater than or equal to 0"),
        ("layer_norm_eps", 0.0, "Input should be greater than 0"),
        ("num_channels", 0, "Input should be greater than or equal to 1"),
        ("initializer_range", -0.02, "Input should be greater than or equal to 0"),
        ("image_size", 0, r"image_size must be a positive int or a \[height, width\] pair of them, got 0"),
    ],
)
def test_out_of_range_fields_name_the_field_and_range(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid DINOv3ConvNextConfig: {field}=.*{message}"):
        DINOv3ConvNextConfig(**{**TINY, field: value})


def test_unknown_activation_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"hidden_act 'swishy' is not supported; set hidden_act to one of"):
        DINOv3ConvNextConfig(hidden_act="swishy")


def test_missing_checkpoint_weight_is_initialised(tmp_path: Path) -> None:
    model = randomize_weights_(AutoBackbone.from_config(DINOv3ConvNextConfig(**SMALL, layer_scale_init_value=0.5)))
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["stages.2.layers.0.gamma"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.missing_keys == ["stages.2.layers.0.gamma"]
    assert torch.equal(loaded.stages[2].layers[0].gamma, torch.full((24,), 0.5))
    assert torch.equal(loaded.stages[1].layers[1].gamma, model.stages[1].layers[1].gamma)


# -- preprocessing ----------------------------------------------------------------------------------

# facebook/dinov3-convnext-tiny-pretrain-lvd1689m's preprocessor_config.json (transformers 4.56 wrote its
# torchvision class's name), with a 64x48 size instead of 224x224.
DINOV3_PREPROCESSOR = imagenet_preprocessor("DINOv3ViTImageProcessorFast", size={"height": 64, "width": 48})


class TestDINOv3ConvNextProcessorParity(ProcessorParity):
    """The checkpoints' processor (or, when the file names none, the one this plugin declares) through
    AutoImageProcessor: core's DINOv3ViTImageProcessor family, which scales to [0, 1] before it resizes,
    against transformers' (torchvision-backed; it has no PIL class) on a downscaled and an upscaled image."""

    model_type = "dinov3_convnext"
    processor_type = "DINOv3ViTImageProcessor"
    reference_options = {"size": DINOV3_PREPROCESSOR["size"]}
    preprocessor = DINOV3_PREPROCESSOR
    expected_attributes = {"rescale_before_resize": True}
    image_sizes = ((97, 131), (30, 20))
    expected_shape = (1, 3, 64, 48)
    tolerance = 2e-5
