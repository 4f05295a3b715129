"""Tests of backbones-vitpose-backbone: the conformance kit (with dataset_index as a declared extra forward
input), parity with transformers 5.23 (backbone and VitPoseForPoseEstimation checkpoints), dataset_index
errors, config errors.

transformers' VitPoseBackbone accepts its config's image_size only and returns token sequences; the parity
checks below therefore build one oracle checkpoint per size (the training size and another) and compare our
maps with its sequences laid out as the pose model lays them out, ``(batch, channels, rows, columns)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

from backbones import AutoBackbone, ConfigError
from backbones.testing import (
    BackboneConformance,
    assert_parity,
    feature_map_loss,
    load_reference,
    random_pixels,
    randomize_weights_,
)
from backbones.testing.vit import ViTConfigErrors
from backbones_vitpose_backbone import VitPoseBackbone, VitPoseBackboneConfig

# Four layers so that out_indices (1, 2, 3, 4) exist; 8-pixel patches (the padded projection needs > 4).
TINY: dict[str, Any] = {
    "hidden_size": 16,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "mlp_ratio": 2,
    "patch_size": [8, 8],  # as transformers writes it (its pose model indexes it)
    "image_size": [32, 24],
}
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},  # ViTPose: one MLP
    "experts": {"num_experts": 3, "part_features": 4},  # ViTPose+: mixture of experts
}
# The training size (the checkpoint's image_size) and another size the architecture accepts.
SIZES = ((32, 24), (48, 40))
SELECTIONS = ((1, 2, 3, 4), (2,), (-1,))
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class TestVitPoseExpertsConformance(BackboneConformance):
    """The mixture of experts: every check runs with dataset_index (image i uses expert i mod 2)."""

    model_type = "vitpose_backbone"
    input_sizes = ((32, 24), (48, 40))
    spatial_rounding = "floor"
    export_multiple = 8
    channel_error_name = "ViTPose backbone"
    bad_config_value = ("patch_size", 4, r"patch_size=4 is too small")

    def make_config(self, **overrides: Any) -> VitPoseBackboneConfig:
        return VitPoseBackboneConfig(**{**TINY, "num_experts": 2, "part_features": 4, **overrides})


class TestVitPosePlainConformance(TestVitPoseExpertsConformance):
    """One expert: dataset_index is optional (and ignored, as in transformers)."""

    deployment_checks = False
    bad_config_value = ("image_size", [36, 24], r"image_size height 36 leaves 4 pixels after 4 patches of 8")

    def make_config(self, **overrides: Any) -> VitPoseBackboneConfig:
        return VitPoseBackboneConfig(**{**TINY, **overrides})


# -- parity with transformers -----------------------------------------------------------------------


def reference_config(variant: str, size: tuple[int, int], **extra: Any) -> Any:
    options = {**TINY, **VARIANTS[variant], "image_size": list(size), **extra}
    return transformers.VitPoseBackboneConfig(**options)


def dataset_index(variant: str, batch: int = 3) -> torch.Tensor | None:
    """Every expert once in the batch (None for the plain model, which takes none)."""
    return torch.tensor([2, 0, 1][:batch]) if variant == "experts" else None


def as_maps(sequences: Any, size: tuple[int, int], patch: int = 8) -> list[torch.Tensor]:
    """transformers' (batch, tokens, channels) stage outputs laid out as its pose model does."""
    rows, columns = size[0] // patch, size[1] // patch
    return [seq.transpose(1, 2).reshape(seq.shape[0], -1, rows, columns) for seq in sequences]


@pytest.fixture(
    scope="module", params=[(v, s) for v in VARIANTS for s in SIZES], ids=lambda p: f"{p[0]}-{p[1][0]}x{p[1][1]}"
)
def oracle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, tuple[int, int], Any, Path]:
    """transformers' VitPoseBackbone (every stage selected), randomised and saved."""
    variant, size = request.param
    torch.manual_seed(0)
    reference = transformers.VitPoseBackbone(reference_config(variant, size, out_indices=ALL_STAGES))
    randomize_weights_(reference, seed=1)
    reference.eval().set_attn_implementation("eager")
    directory = tmp_path_factory.mktemp(f"vitpose-{variant}-{size[0]}x{size[1]}")
    reference.save_pretrained(directory)
    return variant, size, reference, directory


@pytest.mark.parametrize("selection", SELECTIONS, ids=str)
def test_backbone_checkpoint_matches_transformers(oracle: Any, selection: tuple[int, ...]) -> None:
    variant, size, reference, directory = oracle
    model, report = AutoBackbone.from_pretrained(directory, out_indices=list(selection), output_loading_info=True)
    assert type(model) is VitPoseBackbone
    assert report.missing_keys == [] and report.unused_keys == []
    assert model.out_features == [model.stage_names[i] for i in selection]
    batch, index = random_pixels(*size, batch=3, seed=0), dataset_index(variant)
    with torch.no_grad():
        expected = as_maps(reference(batch, index).feature_maps, size)
        ours = model(batch, index).feature_maps
        # The batch reversed: each image keeps its own expert.
        flipped = model(batch.flip(0), None if index is None else index.flip(0)).feature_maps
    positions = [i % 5 for i in selection]
    assert_parity(ours, [expected[p] for p in positions])
    assert_parity([fmap.flip(0) for fmap in flipped], [expected[p] for p in positions])
    assert model.channels == [16] * len(selection)


def test_hidden_states_and_attentions_match_transformers(oracle: Any) -> None:
    variant, size, reference, directory = oracle
    model = AutoBackbone.from_pretrained(directory, out_indices=[1])
    batch, index = random_pixels(*size, batch=3, seed=0), dataset_index(variant)
    with torch.no_grad():
        expected = reference(batch, index, output_hidden_states=True, output_attentions=True)
        output = model(batch, index, output_hidden_states=True, output_attentions=True)
    tokens = (size[0] // 8) * (size[1] // 8)
    assert [tuple(state.shape) for state in output.hidden_states] == [(3, tokens, 16)] * 5
    assert_parity(output.hidden_states, expected.hidden_states)
    assert [tuple(weights.shape) for weights in output.attentions] == [(3, 2, tokens, tokens)] * 4
    assert_parity(output.attentions, expected.attentions, 1e-5)


def test_training_gradients_match_transformers(oracle: Any) -> None:
    variant, size, reference, directory = oracle
    model = AutoBackbone.from_pretrained(directory).train()
    batch, index = random_pixels(*size, batch=3, seed=0), dataset_index(variant)
    reference.train()
    try:
        for network in (model, reference):
            network.zero_grad()
            feature_map_loss([m for m in (network(batch, index).feature_maps)]).backward()
    finally:
        reference.eval()
    theirs = dict(reference.named_parameters())
    assert sorted(theirs) == sorted(name for name, _ in model.named_parameters())
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert_parity([parameter.grad], [theirs[name].grad])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_our_checkpoint_loads_into_transformers(tmp_path: Path, variant: str) -> None:
    config = VitPoseBackboneConfig(**TINY, **VARIANTS[variant], out_indices=[2, 4])
    model = randomize_weights_(AutoBackbone.from_config(config), seed=3).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["VitPoseBackbone"] and saved["model_type"] == "vitpose_backbone"
    reference = load_reference("VitPoseBackbone", tmp_path)
    assert list(reference.out_indices) == [2, 4]
    batch, index = random_pixels(32, 24, batch=3, seed=0), dataset_index(variant)
    with torch.no_grad():
        assert_parity(model(batch, index).feature_maps, as_maps(reference(batch, index).feature_maps, (32, 24)))


# -- the pose model's checkpoint --------------------------------------------------------------------


@pytest.fixture(scope="module", params=[(v, simple) for v in VARIANTS for simple in (True, False)], ids=str)
def pose_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Path]:
    """A tiny VitPoseForPoseEstimation (simple or classic decoder), randomised and saved."""
    variant, simple = request.param
    config = transformers.VitPoseConfig(
        backbone_config=reference_config(variant, (32, 24), out_indices=[4]),
        use_simple_decoder=simple,
        num_labels=5,
    )
    torch.manual_seed(0)
    pose = randomize_weights_(transformers.VitPoseForPoseEstimation(config), seed=2).eval()
    directory = tmp_path_factory.mktemp(f"vitpose-pose-{variant}-{simple}")
    pose.save_pretrained(directory)
    return variant, pose, directory


def test_pose_checkpoint_loads_with_prefix(pose_checkpoint: Any) -> None:
    variant, pose, directory = pose_checkpoint
    model, report = VitPoseBackbone.from_pretrained(
        directory, checkpoint_prefix="backbone.", config_key="backbone_config", output_loading_info=True
    )
    assert model.out_indices == [4]  # the selection saved in backbone_config
    assert model.config.num_experts == (3 if variant == "experts" else 1)
    assert report.missing_keys == []
    with safe_open(directory / "model.safetensors", "pt") as handle:
        saved = sorted(handle.keys())
    head = [key for key in saved if key.startswith("head.")]
    assert report.unused_keys == head
    expected_head = ["head.conv.bias", "head.conv.weight"]
    if not pose.config.use_simple_decoder:
        expected_head = sorted(
            ["head.conv.bias", "head.conv.weight", "head.deconv1.weight", "head.deconv2.weight"]
            + [
                f"head.batchnorm{i}.{name}"
                for i in (1, 2)
                for name in ("bias", "num_batches_tracked", "running_mean", "running_var", "weight")
            ]
        )
    assert head == expected_head
    batch, index = random_pixels(32, 24, batch=3, seed=0), dataset_index(variant)
    with torch.no_grad():
        (fmap,) = model(batch, index).feature_maps
        (sequence,) = pose.backbone(batch, index).feature_maps
        heatmaps = pose(batch, index).heatmaps
    assert_parity([fmap], as_maps([sequence], (32, 24)))
    # The pose model's head on our map gives its heatmaps.
    with torch.no_grad():
        assert_parity([pose.head(fmap)], [heatmaps])


def test_pose_checkpoint_through_auto_backbone(pose_checkpoint: Any) -> None:
    variant, pose, directory = pose_checkpoint
    model = AutoBackbone.from_pretrained(
        directory, checkpoint_prefix="backbone.", config_key="backbone_config", out_indices=[1, -1]
    )
    assert isinstance(model, VitPoseBackbone)
    batch, index = random_pixels(32, 24, batch=2, seed=0), dataset_index(variant, batch=2)
    pose.backbone.out_indices = [1, 4]
    try:
        with torch.no_grad():
            expected = as_maps(pose.backbone(batch, index).feature_maps, (32, 24))
            assert_parity(model(batch, index).feature_maps, expected)
    finally:
        pose.backbone.out_indices = [4]


def test_forward_with_filtered_kwargs_keeps_dataset_index() -> None:
    """transformers' pose model calls its backbone this way."""
    model = AutoBackbone.from_config(VitPoseBackboneConfig(**TINY, **VARIANTS["experts"])).eval()
    batch = random_pixels(32, 24, batch=2, seed=0)
    index = torch.tensor([1, 2])
    with torch.no_grad():
        direct = model(batch, index).feature_maps
        filtered = model.forward_with_filtered_kwargs(batch, dataset_index=index, flip_pairs=None).feature_maps
    assert_parity(filtered, direct, 0.0)


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    reference = transformers.VitPoseBackboneConfig(
        **TINY, num_experts=6, part_features=4, out_features=["stage2", "stage4"]
    )
    reference.save_pretrained(tmp_path)
    config = VitPoseBackboneConfig.from_pretrained(tmp_path)
    assert (config.num_experts, config.part_features, config.patch_size) == (6, 4, 8)
    assert json.loads((tmp_path / "config.json").read_text())["patch_size"] == [8, 8]
    assert config.image_size == (32, 24)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [2, 4]
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    out = tmp_path / "ours"
    config.save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["patch_size"] == [8, 8]
    again = transformers.VitPoseBackboneConfig.from_pretrained(out)
    assert (again.num_experts, again.part_features, list(again.image_size)) == (6, 4, [32, 24])
    assert again.out_features == ["stage2", "stage4"]


def test_default_config_is_vitpose_base_at_256x192() -> None:
    config = VitPoseBackboneConfig(out_indices=[12])
    with torch.device("meta"):
        model = VitPoseBackbone(config)
        reference = transformers.VitPoseBackbone(transformers.VitPoseBackboneConfig())
        (fmap,) = model(torch.empty(1, 3, 256, 192)).feature_maps
    assert tuple(fmap.shape) == (1, 768, 16, 12)
    assert model.out_reductions == [16]
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    # ViTPose+-B: six experts of 192 channels each.
    plus = VitPoseBackboneConfig(num_experts=6, part_features=192, out_indices=[12])
    with torch.device("meta"):
        model = VitPoseBackbone(plus)
        reference = transformers.VitPoseBackbone(transformers.VitPoseBackboneConfig(num_experts=6, part_features=192))
        (fmap,) = model(torch.empty(2, 3, 256, 192), torch.zeros(2, dtype=torch.long)).feature_maps
    assert tuple(fmap.shape) == (2, 768, 16, 12)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())


# -- dataset_index and other input errors -----------------------------------------------------------


@pytest.fixture(scope="module")
def experts_model() -> VitPoseBackbone:
    return AutoBackbone.from_config(VitPoseBackboneConfig(**TINY, **VARIANTS["experts"])).eval()


def test_missing_dataset_index_names_the_valid_range(experts_model: VitPoseBackbone) -> None:
    message = (
        r"dataset_index is required: this ViTPose backbone has 3 experts, so pass one expert index per image, "
        r"a \(batch,\) integer tensor with values in \[0, 2\] \(config.num_experts=3\)"
    )
    with pytest.raises(ValueError, match=message):
        experts_model(random_pixels(32, 24, batch=2, seed=0))


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (torch.tensor([0, 3]), r"dataset_index holds \[3\], outside the valid range \[0, 2\] \(config.num_experts=3\)"),
        (torch.tensor([-1, 5]), r"dataset_index holds \[-1, 5\], outside the valid range \[0, 2\]"),
        (torch.tensor([0.0, 1.0]), r"dataset_index must be an integer tensor with values in \[0, 2\] .*torch.float32"),
        ([0, 1], r"dataset_index must be an integer tensor .*, got list"),
        (torch.tensor([0, 1, 2]), r"one expert index per image: got shape \(3,\) for a batch of 2"),
    ],
)
def test_bad_dataset_index_is_explained(experts_model: VitPoseBackbone, index: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        experts_model(random_pixels(32, 24, batch=2, seed=0), index)


def test_one_expert_ignores_dataset_index() -> None:
    model = AutoBackbone.from_config(VitPoseBackboneConfig(**TINY)).eval()
    batch = random_pixels(32, 24, batch=2, seed=0)
    with torch.no_grad():
        assert_parity(model(batch, torch.tensor([7, 9])).feature_maps, model(batch).feature_maps, 0.0)


def test_other_sizes_resample_the_position_table() -> None:
    model = AutoBackbone.from_config(VitPoseBackboneConfig(**TINY, out_indices=[0])).eval()
    table = model.embeddings.position_embeddings
    assert torch.equal(model.embeddings._patch_positions(4, 3), table[:, 1:])
    resized = model.embeddings._patch_positions(6, 5)
    assert tuple(resized.shape) == (1, 30, 16)
    with torch.no_grad():
        (fmap,) = model(random_pixels(48, 40, batch=1, seed=0)).feature_maps
    assert tuple(fmap.shape) == (1, 16, 6, 5)


# -- config errors ----------------------------------------------------------------------------------


class TestVitPoseBackboneConfigErrors(ViTConfigErrors):
    config_class = VitPoseBackboneConfig
    config = TINY
    vit_rules = ("square-patches", "heads-divide-the-width", "unknown-activation")
    errors = {
        "patch-too-small": ({"patch_size": 4}, r"patch_size=4 is too small: .* use patch_size >= 5"),
        "width-leaves-a-short-patch": (
            {"image_size": [32, 30]},
            r"image_size width 30 leaves 6 pixels after 3 patches of 8, .* below 4 \(e.g. 24\)",
        ),
        "height-holds-a-patch": ({"image_size": [4, 24]}, r"image_size height 4 is smaller than patch_size 8"),
        "positive-expert-count": ({"num_experts": 0}, r"num_experts"),
        "part-features-below-the-width": (
            {"num_experts": 2, "part_features": 16},
            r"part_features=16 must be in \[1, 15\] \(below hidden_size=16\)",
        ),
        "positive-mlp-ratio": ({"mlp_ratio": 0}, r"mlp_ratio"),
    }


def test_part_features_is_free_with_one_expert() -> None:
    # transformers' default part_features (256) is larger than a tiny width; unused with one expert.
    assert VitPoseBackboneConfig(**TINY).part_features == 256


# -- preprocessing ----------------------------------------------------------------------------------

# usyd-community/vitpose-base-simple's preprocessor_config.json, with 64x48 crops instead of 256x192.
PREPROCESSOR: dict[str, Any] = {
    "image_processor_type": "VitPoseImageProcessor",
    "do_affine_transform": True,
    "do_normalize": True,
    "do_rescale": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "normalize_factor": 200.0,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 64, "width": 48},
}
# Boxes inside, across the border of and larger than the image, in COCO (x, y, width, height) format.
BOXES = [[[10.5, 5.2, 40.0, 70.3], [60, 20, 30, 15]], [[-5, -3, 40, 80], [0, 0, 50, 70]]]


@pytest.fixture(scope="module")
def processors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers.models.vitpose.image_processing_pil_vitpose import VitPoseImageProcessorPil

    from backbones import AutoImageProcessor

    directory = tmp_path_factory.mktemp("vitpose-processor")
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    ours = AutoImageProcessor.from_pretrained(directory)
    theirs = VitPoseImageProcessorPil(**{k: v for k, v in PREPROCESSOR.items() if k != "image_processor_type"})
    return ours, theirs


def test_processor_is_the_plugins_own(processors: tuple[Any, Any]) -> None:
    from backbones_vitpose_backbone import VitPoseImageProcessor

    ours, _ = processors
    assert type(ours) is VitPoseImageProcessor
    assert ours.size == {"height": 64, "width": 48} and ours.normalize_factor == 200.0


def _images() -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)),
    ]


def test_box_crops_match_transformers_pil_processor(processors: tuple[Any, Any]) -> None:
    ours, theirs = processors
    images = _images()
    expected = theirs(images, boxes=BOXES, return_tensors="pt")["pixel_values"]
    crops = ours(images, boxes=BOXES, return_tensors="pt")["pixel_values"]
    assert tuple(crops.shape) == (4, 3, 64, 48)
    assert_parity([crops], [expected], 1e-6)
    # 8-bit arrays are 8-bit images too (the crops are rounded to whole values as the reference's are).
    arrays = [np.asarray(image) for image in images]
    assert_parity([ours(arrays, boxes=BOXES, return_tensors="pt")["pixel_values"]], [expected], 1e-6)


def test_float_images_are_not_rounded(processors: tuple[Any, Any]) -> None:
    ours, theirs = processors
    image = np.random.default_rng(1).random((40, 30, 3)).astype(np.float32) * 255
    boxes = [[[3.3, 4.1, 20.2, 25.7]]]
    expected = theirs(image, boxes=boxes, return_tensors="pt")["pixel_values"]
    assert_parity([ours(image, boxes=boxes, return_tensors="pt")["pixel_values"]], [expected], 1e-5)


def test_without_affine_transform_images_are_only_normalised(processors: tuple[Any, Any]) -> None:
    ours, theirs = processors
    image = _images()[0]
    boxes = [[[0, 0, 120, 90]]]
    expected = theirs(image, boxes=boxes, do_affine_transform=False, return_tensors="pt")["pixel_values"]
    result = ours(image, boxes=boxes, do_affine_transform=False, return_tensors="pt")["pixel_values"]
    assert tuple(result.shape) == (1, 3, 90, 120)
    assert_parity([result], [expected], 1e-6)


def test_boxes_must_match_the_images(processors: tuple[Any, Any]) -> None:
    ours, _ = processors
    with pytest.raises(ConfigError, match="boxes must hold one list of boxes per image: got 1 lists for 2 images"):
        ours(_images(), boxes=BOXES[:1])
    with pytest.raises(
        ConfigError, match=r"boxes\[0\] holds \[1, 2\]; a box is \(top_left_x, top_left_y, width, height\)"
    ):
        ours(_images()[:1], boxes=[[[1, 2]]])
