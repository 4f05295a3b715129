"""Tests of backbones-uvdoc-backbone: the conformance kit, parity with transformers 5.23 (the backbone and the
backbone inside UVDocModel), reparameterisation, preprocessing, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from torch import Tensor, nn

from backbones import AutoBackbone, ConfigError, ReparameterizedError
from backbones.testing import (
    FixedSizeProcessorParity,
    TransformersParity,
    assert_exports_with_dynamic_size,
    assert_nested_checkpoint,
    assert_parity,
    random_pixels,
    randomize_weights_,
)
from backbones.testing.cnn import CNNConformance, save_randomized
from backbones_uvdoc_backbone import UVDocBackbone, UVDocBackboneConfig, UVDocImageProcessor

# Two head layers, a stage of one plain block and a stage of a downsampling and a dilated block (stride 8),
# four bridges (one of two layers).
TINY: dict[str, Any] = {
    "resnet_head": [[3, 4], [4, 8]],
    "resnet_configs": [[[8, 8, 1, False]], [[8, 16, 1, True], [16, 16, 2, False]]],
    "stage_configs": [[[16, 1]], [[16, 2], [16, 3]], [[16, 5]], [[16, 2]]],
}
ALL_STAGES = [0, 1, 2, 3, 4]


# -- conformance ------------------------------------------------------------------------------------


class TestUVDocBackboneConformance(CNNConformance):
    """Every padded stride-2 convolution rounds up."""

    config_class = UVDocBackboneConfig
    config = TINY
    deepest_stride = 8
    bad_config_value = ("kernel_size", 3, r"kernel_size=3 must be 5")


# -- parity with transformers -----------------------------------------------------------------------


class TestUVDocBackboneParity(TransformersParity):
    backbone_class = UVDocBackbone
    config = TINY
    # 712x488: the size UVDoc's processor resizes every page to; 50x38 exercises the rounding up.
    input_sizes = ((712, 488), (50, 38))
    batch_size = 1
    out_indices = ((1, 2, 3, 4), (2,), (-1,))
    hidden_state_count = 5
    hidden_state_shapes: ClassVar[tuple[tuple[int, ...], ...] | None] = ((1, 16, 89, 61),) * 5
    round_trip_out_indices = (0, 2, 4)
    # transformers' UVDocBackbone reports the first bridge layer's dilation as each stage's channels (and the
    # head's width for the stem): [8, 1, 2, 5, 2] here, where every map has 16. The maps are compared instead.
    reference_reports_channels = False
    compare_gradients = True


def test_transformers_reports_dilations_as_channels() -> None:
    """Why ``reference_reports_channels`` is off: transformers' metadata, ours, and the maps' real widths."""
    reference = transformers.UVDocBackbone(transformers.UVDocBackboneConfig(**TINY, out_indices=ALL_STAGES))
    model = UVDocBackbone(UVDocBackboneConfig(**TINY, out_indices=ALL_STAGES)).eval()
    assert list(reference.channels) == [8, 1, 2, 5, 2]
    with torch.no_grad():
        maps = model(random_pixels(64, 48)).feature_maps
    assert model.channels == [fmap.shape[1] for fmap in maps] == [16] * 5


# -- the backbone inside UVDocModel ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def uvdoc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A tiny UVDocModel, randomised and saved: its backbone is under ``backbone.`` with its config in
    ``backbone_config``."""
    # UVDocModel concatenates every bridge's map, so its backbone must return them all: transformers' default
    # selection (the last stage) makes its own UVDocModel() crash, hence the explicit out_indices.
    backbone = transformers.UVDocBackboneConfig(**TINY, out_indices=[1, 2, 3, 4])
    config = transformers.UVDocConfig(
        backbone_config=backbone, bridge_connector=[16, 16], out_point_positions2D=[[16, 4], [4, 2]]
    )
    directory = tmp_path_factory.mktemp("uvdoc")
    return save_randomized(transformers.UVDocModel(config), directory), directory


def test_uvdoc_model_checkpoint_loads_with_prefix(uvdoc_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = uvdoc_checkpoint
    sizes = ((712, 488), (50, 38))
    model, report = assert_nested_checkpoint(
        directory,
        reference.backbone,
        "backbone.",
        backbone_class=UVDocBackbone,
        out_indices=[1, 2, 3, 4],  # the selection saved in backbone_config
        input_sizes=sizes,
        min_unused=14,
        loader=UVDocBackbone,
    )
    # The head: the bridge connector and the grid predictor (a PReLU's weight among them), nothing of ours.
    head = report.unused_keys
    assert head == sorted(key for key in reference.state_dict() if key.startswith("head.")) and len(head) == 15
    for size in sizes:
        batch = random_pixels(*size, batch=1)
        with torch.no_grad():
            ours = model(batch, output_hidden_states=True)
            assert_parity(ours.hidden_states, reference.backbone(batch, output_hidden_states=True).hidden_states)
            # What UVDoc's head reads: the maps concatenated along the channels.
            head_input = torch.cat(ours.feature_maps, dim=1)
            assert tuple(head_input.shape[:2]) == (1, 64)
            assert_parity([reference.head(head_input)], [reference(batch).last_hidden_state])


def test_uvdoc_model_checkpoint_through_auto_backbone(uvdoc_checkpoint: tuple[Any, Path]) -> None:
    reference, directory = uvdoc_checkpoint
    model = AutoBackbone.from_pretrained(
        directory, checkpoint_prefix="backbone.", config_key="backbone_config", out_indices=[0, -1]
    )
    assert isinstance(model, UVDocBackbone) and model.out_features == ["stem", "stage4"]
    batch = random_pixels(64, 48, batch=1)
    with torch.no_grad():
        states = reference.backbone(batch, output_hidden_states=True).hidden_states
        assert_parity(model(batch).feature_maps, [states[0], states[4]])


# -- transformers' config.json in, ours out ---------------------------------------------------------


def test_transformers_config_json_round_trips(tmp_path: Path) -> None:
    transformers.UVDocBackboneConfig(**TINY, out_features=["stage2", "stage4"]).save_pretrained(tmp_path)
    config = UVDocBackboneConfig.from_pretrained(tmp_path)
    assert config.out_features == ["stage2", "stage4"] and config.out_indices == [2, 4]
    assert config.depths == [1, 2, 1, 1] and config.unknown_fields() == {}
    assert config.resnet_configs[1][0] == (8, 16, 1, True)
    # A config built from the file (its depths included) with one bridge layer more.
    data = json.loads((tmp_path / "config.json").read_text())
    data["stage_configs"] = [[[16, 1], [16, 4]], *TINY["stage_configs"][1:]]
    out = tmp_path / "ours"
    UVDocBackboneConfig.from_dict(data).save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["depths"] == [2, 2, 1, 1]  # the file's stale count is replaced
    assert saved["resnet_configs"][1][0] == [8, 16, 1, True]
    back = transformers.UVDocBackboneConfig.from_pretrained(out)
    assert back.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert back.out_features == ["stage2", "stage4"]
    assert [list(layer) for layer in back.stage_configs[0]] == [[16, 1], [16, 4]] and back.depths == [2, 2, 1, 1]


# -- the default size -------------------------------------------------------------------------------


def test_default_size_builds_on_meta_with_transformers_shapes() -> None:
    every_bridge = [1, 2, 3, 4, 5, 6]
    with torch.device("meta"):
        model = UVDocBackbone(UVDocBackboneConfig(out_indices=every_bridge))
        reference = transformers.UVDocBackbone(transformers.UVDocBackboneConfig(out_indices=every_bridge))
        maps = model(torch.empty(1, 3, 712, 488)).feature_maps
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert ours == {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()}
    # 712x488 at stride 16, rounded up; UVDoc's head reads the six maps concatenated (768 channels).
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 128, 45, 31)] * 6
    assert model.channels == [128] * 6 and model.out_reductions == [16] * 6


# -- reparameterisation -----------------------------------------------------------------------------


def _relative_difference(ours: tuple[Tensor, ...], reference: tuple[Tensor, ...]) -> float:
    """The largest ``max|a - b| / max|b|`` over the maps."""
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, reference))


def _randomised(**overrides: Any) -> UVDocBackbone:
    model = UVDocBackbone(UVDocBackboneConfig(**TINY, **overrides))
    return randomize_weights_(model, 0).eval()  # type: ignore[return-value]


def test_reparameterize_folds_every_batch_norm_with_the_same_outputs() -> None:
    model = _randomised(out_indices=ALL_STAGES)
    sizes = ((64, 64), (50, 38))
    with torch.no_grad():
        expected = [model(random_pixels(*size)).feature_maps for size in sizes]
    norms = sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    assert norms == 2 + 3 + 2 * 2 + 5  # head, the downsampling block, the two plain blocks, bridge layers
    assert model.reparameterize() == norms
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    block = model.resnet.resnet_down[1].layers[1]
    assert block.conv_start.convolution.dilation == (2, 2) and block.conv_start.convolution.bias is not None
    with torch.no_grad():
        for size, reference in zip(sizes, expected):
            assert _relative_difference(model(random_pixels(*size)).feature_maps, reference) <= 1e-5


def test_folded_model_refuses_training_and_saving(tmp_path: Path) -> None:
    model = UVDocBackbone(UVDocBackboneConfig(**TINY)).train()
    model.reparameterize()
    assert model.is_reparameterized and not model.training
    with pytest.raises(ReparameterizedError, match="cannot train; load the checkpoint again"):
        model.train()
    with pytest.raises(ReparameterizedError, match="save the model before calling reparameterize"):
        model.save_pretrained(tmp_path)


def test_folded_model_exports_with_dynamic_size(tmp_path: Path) -> None:
    model = _randomised(out_indices=[0, 2, 4])
    model.reparameterize()
    inputs = [random_pixels(*size, seed=3) for size in ((64, 64), (50, 38))]
    assert_exports_with_dynamic_size(
        model, random_pixels(64, 48), inputs, size_range=(9, 4096), onnx_path=tmp_path / "uvdoc.onnx"
    )


# -- behaviour --------------------------------------------------------------------------------------


def test_only_the_requested_bridges_run() -> None:
    # The bridges read the trunk's map, not each other's, so a selection runs only its own (backbones.testing's
    # assert_runs_up_to_deepest_selected_stage expects chained stages and would ask for bridge 1 too).
    model = UVDocBackbone(UVDocBackboneConfig(**TINY, out_indices=[2])).eval()
    calls: list[int] = []
    for number, bridge in enumerate(model.bridge.bridge, start=1):
        bridge.register_forward_hook(lambda *_, number=number: calls.append(number))
    with torch.no_grad():
        model(random_pixels(64, 48))
        assert calls == [2]
        model.out_indices = [0]
        model(random_pixels(64, 48))
        assert calls == [2]  # the trunk alone
        model.out_indices = [1, 3]
        model(random_pixels(64, 48))
        assert calls == [2, 1, 3]
        model(random_pixels(64, 48), output_hidden_states=True)
        assert calls == [2, 1, 3, 1, 2, 3, 4]  # hidden states cover every stage


def test_fresh_weights_follow_transformers_init() -> None:
    torch.manual_seed(0)
    model = UVDocBackbone(UVDocBackboneConfig())
    layer = model.bridge.bridge[5].blocks[0]
    norm = layer.normalization
    assert isinstance(norm, nn.BatchNorm2d)
    assert torch.equal(norm.weight, torch.ones(128)) and torch.equal(norm.running_var, torch.ones(128))
    assert layer.convolution.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_wrong_channel_count_names_the_field() -> None:
    model = UVDocBackbone(UVDocBackboneConfig(**TINY))
    with pytest.raises(
        ValueError,
        match=r"pixel_values has 1 channels but this UVDoc backbone expects 3 \(config\.resnet_head\[0\]\[0\]\)",
    ):
        model(torch.zeros(1, 1, 64, 64))


# -- preprocessing ----------------------------------------------------------------------------------

# A preprocessor_config.json as transformers writes UVDocImageProcessor's, with a 64x48 size instead of 712x488.
PREPROCESSOR: dict[str, Any] = {
    "do_rescale": True,
    "do_resize": True,
    "image_processor_type": "UVDocImageProcessor",
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 64, "width": 48},
}


def _image(height: int = 75, width: int = 101) -> Image.Image:
    return Image.fromarray(np.random.default_rng(height).integers(0, 256, size=(height, width, 3), dtype=np.uint8))


class TestUVDocProcessorParity(FixedSizeProcessorParity):
    model_type = "uvdoc_backbone"
    processor_class = UVDocImageProcessor
    preprocessor = PREPROCESSOR
    variants = {
        "normalized": {"do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
        "upsampled": {"size": {"height": 160, "width": 120}},
    }
    reference_only_outputs = ("original_images",)


def test_processor_defaults_are_transformers_defaults() -> None:
    ours, oracle = UVDocImageProcessor(), transformers.UVDocImageProcessor()
    assert ours.size == dict(oracle.size) == {"height": 712, "width": 488}
    assert (ours.do_rescale, ours.do_normalize, ours.do_convert_rgb) == (True, False, False)
    image = _image(300, 200)
    expected = oracle(image, return_tensors="pt")["pixel_values"]
    actual = ours(image, return_tensors="pt")["pixel_values"]
    assert tuple(actual.shape) == tuple(expected.shape) == (1, 3, 712, 488)
    assert (actual - expected).abs().max().item() <= 1e-5
    # BGR: the first channel is the image's blue one (corners are aligned, so the corner pixel is kept).
    corner = np.asarray(image)[0, 0]
    assert actual[0, :, 0, 0].tolist() == pytest.approx((corner[::-1] / 255).tolist(), abs=1e-6)
    assert (
        ours.describe()
        == "channels as given, scale to [0, 1], resize to 712x488 (bilinear, aligned corners), RGB to BGR"
    )


def test_processor_refuses_a_shortest_edge_size() -> None:
    with pytest.raises(ConfigError, match=r"resizes to a fixed size only: size=.* must be \{'height': H, 'width': W\}"):
        UVDocImageProcessor(size={"shortest_edge": 64})


# -- config errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kernel_size": 7}, r"kernel_size=7 must be 5: the residual blocks pad by 2 x dilation"),
        ({"resnet_head": [[3, 4], [8, 8]]}, r"resnet_head\[1\] takes 8 channels but resnet_head\[0\] gives 4"),
        ({"resnet_head": [[3, 4, 5]]}, r"resnet_head\[0\]=\[3, 4, 5\] must be \[in_channels, out_channels\]"),
        ({"resnet_head": []}, r"resnet_head is empty"),
        (
            {"resnet_configs": [[[4, 8, 1, False]], [[8, 16, 1, True]]]},
            r"resnet_configs\[0\]\[0\] takes 4 channels but the layer before gives 8",
        ),
        (
            {"resnet_configs": [[[8, 16, 1, False]], [[16, 16, 1, True]]]},
            r"resnet_configs\[0\]\[0\] changes the width \(8 -> 16\) without downsample",
        ),
        (
            {"resnet_configs": [[[8, 8, 0, False]], [[8, 16, 1, True]]]},
            r"resnet_configs\[0\]\[0\]: out_channels=8 and dilation=0 must be 1 or more",
        ),
        ({"resnet_configs": [[], [[8, 16, 1, True]]]}, r"resnet_configs\[0\] is empty"),
        (
            {"stage_configs": [[[16, 1]], [[8, 2]]]},
            r"stage_configs\[1\]\[0\] has 8 channels but every bridge layer keeps the trunk's 16",
        ),
        ({"stage_configs": [[[16, 0]]]}, r"stage_configs\[0\]\[0\]: dilation=0 must be 1 or more"),
        ({"stage_configs": []}, r"stage_configs is empty"),
        ({"stage_configs": [[]]}, r"stage_configs\[0\] is empty"),
    ],
)
def test_bad_configs_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UVDocBackboneConfig(**{**TINY, **overrides})
