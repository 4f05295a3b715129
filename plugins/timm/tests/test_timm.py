"""Tests of backbones-timm: the conformance kit, parity with transformers 5.23's TimmBackbone and with timm's
own feature extractors, pretrained weights from local files, error messages, and the dependency rule."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import timm
import torch
import transformers
from safetensors.torch import load_file, save_file
from timm.layers import FrozenBatchNormAct2d
from timm.layers.norm_act import FrozenBatchNorm2d
from torch import nn

from backbones import AutoBackbone, CheckpointError, ConfigError, ReparameterizedError, load_backbone
from backbones.testing import BackboneConformance, assert_close_maps, assert_parity, randomize_weights_
from backbones_timm import TimmBackbone, TimmBackboneConfig, is_timm_model_name, load_timm_pretrained
from backbones_timm._pretrained import load_by_name

ROOT = Path(__file__).resolve().parents[3]


def pixels(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub access (huggingface_hub reads HF_HUB_OFFLINE once, at import, into this constant)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# -- conformance ------------------------------------------------------------------------------------


class TestResNetConformance(BackboneConformance):
    """timm's FeatureListNet (modules run in order, stopping at the deepest requested stage)."""

    model_type = "timm_backbone"
    # Every stride-2 convolution and the max-pool pad by kernel // 2: each halving is ceil(size / 2). Sizes
    # within the default export range (from twice the deepest stride, 64, so that no map is 1 wide), with
    # odd maps at several stages (100 -> 50, 25, 13, 7, 4).
    input_sizes = ((64, 64), (100, 70))
    spatial_rounding = "ceil"

    def make_config(self, **overrides: Any) -> TimmBackboneConfig:
        # avg_down=False: test_resnet's default average-pooled shortcut (AvgPool2d(2, 2, ceil_mode=True))
        # makes PyTorch's pooling shape function branch on the map size ("does the last window start
        # inside the map?"), which torch.export cannot decide symbolically although it never holds for
        # kernel = stride = 2. That is torch's shape function, not ResNet's math, so the conformance
        # model uses the strided-convolution shortcut; the module runner is the same.
        return TimmBackboneConfig(backbone="test_resnet", avg_down=False, **overrides)


class TestMobileNetConformance(TestResNetConformance):
    """timm's MobileNetV3Features (stem, then blocks up to the deepest requested stage)."""

    def make_config(self, **overrides: Any) -> TimmBackboneConfig:
        return TimmBackboneConfig(backbone="mobilenetv3_small_050", **overrides)


class TestChannelsLastConformance(TestResNetConformance):
    """A FeatureListNet whose stages compute (batch, height, width, channels) maps (MambaOut, as Swin)."""

    def make_config(self, **overrides: Any) -> TimmBackboneConfig:
        return TimmBackboneConfig(backbone="test_mambaout", **overrides)


class TestViTConformance(TestResNetConformance):
    """timm's FeatureGetterNet (forward_intermediates with stop_early); dynamic_img_size allows any size."""

    # dynamic_img_pad pads the image to a multiple of the 16x16 patch: ceil(size / 16) patches a side.
    input_sizes = ((64, 64), (80, 50))

    def make_config(self, **overrides: Any) -> TimmBackboneConfig:
        return TimmBackboneConfig(backbone="test_vit", dynamic_img_size=True, dynamic_img_pad=True, **overrides)


# -- parity with transformers' TimmBackbone and with timm --------------------------------------------

FAMILIES: dict[str, dict[str, Any]] = {
    "resnet10t": {},
    "convnext_atto": {},
    "mobilenetv3_small_050": {},
    "vit_tiny_patch16_224": {"img_size": 64},
}
# (family, out_indices, extra TimmBackboneConfig fields shared by transformers and us)
CASES = [
    *((family, [1, 2, -1], {}) for family in FAMILIES),
    ("resnet10t", [-1], {}),
    ("resnet10t", [0, 1, 2, 3, 4], {"freeze_batch_norm_2d": True}),
    ("resnet10t", [2, 3, 4], {"output_stride": 16}),
    ("convnext_atto", [0, 3], {}),
]


def case_id(case: tuple[str, list[int], dict[str, Any]]) -> str:
    family, indices, extra = case
    return "-".join([family, ",".join(map(str, indices)), *extra])


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def parity(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A transformers TimmBackbone with every weight and statistic randomised, saved with save_pretrained;
    our backbone loaded from that directory; and timm's own feature extractor (every stage) with its weights."""
    family, out_indices, extra = request.param
    config = transformers.TimmBackboneConfig(
        backbone=family, use_pretrained_backbone=False, out_indices=out_indices, **extra
    )
    oracle = randomize_weights_(transformers.TimmBackbone(config, **FAMILIES[family])).eval()
    directory = tmp_path_factory.mktemp(case_id(request.param))
    oracle.save_pretrained(directory)
    model, report = AutoBackbone.from_pretrained(directory, output_loading_info=True, **FAMILIES[family])
    timm_features = timm.create_model(
        family,
        features_only=True,
        out_indices=tuple(range(len(oracle.stage_names))),
        output_stride=extra.get("output_stride"),
        **FAMILIES[family],
    )
    if extra.get("freeze_batch_norm_2d"):
        timm_features = timm.layers.freeze_batch_norm_2d(timm_features)
    trunk = {key.removeprefix("_backbone."): value for key, value in oracle.state_dict().items()}
    timm_features.load_state_dict(trunk, strict=True)
    return {
        "family": family,
        "out_indices": out_indices,
        "oracle": oracle,
        "model": model,
        "report": report,
        "timm": timm_features.eval(),
    }


def test_transformers_checkpoint_loads_with_the_same_stages_and_maps(parity: dict[str, Any]) -> None:
    oracle, model, report = parity["oracle"], parity["model"], parity["report"]
    assert isinstance(model, TimmBackbone)
    assert report.clean, str(report)  # every selection here ends at the last stage, as transformers' default
    assert model.stage_names == oracle.stage_names
    assert model.num_features == oracle.num_features
    assert model.out_indices == oracle.out_indices  # positive for ViTs: transformers saves timm's view
    assert model.out_features == oracle.out_features
    assert model.channels == oracle.channels
    with torch.no_grad():
        ours = model(pixels()).feature_maps
        reference = oracle(pixels()).feature_maps
    assert len(ours) == len(parity["out_indices"])
    assert_close_maps(ours, reference, atol=1e-5)


def test_maps_and_hidden_states_match_timms_own_feature_extractor(parity: dict[str, Any]) -> None:
    model, reference = parity["model"], parity["timm"]
    with torch.no_grad():
        ours = model(pixels(), output_hidden_states=True)
        expected = reference(pixels())
    assert len(ours.hidden_states) == len(model.stage_names) == len(expected)
    assert_close_maps(ours.hidden_states, expected, atol=1e-5)
    assert_close_maps(ours.feature_maps, [expected[i] for i in model.out_positions], atol=1e-5)
    # Metadata from timm's feature_info, known without a forward, and true of the maps.
    info = reference.feature_info
    assert model.stage_names == [entry["module"] for entry in info.info]
    assert model.num_features == info.channels()
    assert model.reductions == info.reduction()
    assert [tuple(fmap.shape[1:]) for fmap in expected] == [
        (channels, -(-64 // reduction), -(-64 // reduction))
        for channels, reduction in zip(model.num_features, model.reductions)
    ]


def test_hidden_states_match_transformers_resnet(tmp_path: Path) -> None:
    # transformers 5.23 returns hidden states of timm models only where its FeatureListNet keeps the module
    # names of feature_info (ResNets); for ConvNeXt (flattened names), MobileNets and ViTs it raises IndexError.
    config = transformers.TimmBackboneConfig(backbone="resnet10t", use_pretrained_backbone=False, out_indices=[2, -1])
    oracle = randomize_weights_(transformers.TimmBackbone(config)).eval()
    oracle.save_pretrained(tmp_path)
    model = AutoBackbone.from_pretrained(tmp_path)
    with torch.no_grad():
        ours = model(pixels(), output_hidden_states=True)
        reference = oracle(pixels(), output_hidden_states=True)
    assert len(ours.hidden_states) == len(reference.hidden_states) == 5
    assert_close_maps(ours.hidden_states, reference.hidden_states, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_our_checkpoint_loads_into_transformers(tmp_path: Path, family: str) -> None:
    config = TimmBackboneConfig(backbone=family, out_indices=[1, -1], **FAMILIES[family])
    model = randomize_weights_(TimmBackbone(config)).eval()
    model.save_pretrained(tmp_path)
    # transformers 5.23's TimmBackbone.from_pretrained(directory) passes the directory to timm as a model
    # name, so the oracle is built from the saved config and given the saved weights.
    oracle_config = transformers.TimmBackboneConfig.from_pretrained(tmp_path)
    oracle = transformers.TimmBackbone(oracle_config, **FAMILIES[family]).eval()
    oracle.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    # (for ViTs transformers turns [1, -1] into positive indices: timm's getter reports them so)
    assert oracle.out_features == model.out_features
    assert oracle.stage_names == model.stage_names
    with torch.no_grad():
        assert_close_maps(model(pixels()).feature_maps, oracle(pixels()).feature_maps, atol=1e-5)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "timm_backbone" and saved["architectures"] == ["TimmBackbone"]
    assert saved["stage_names"] == model.stage_names


def test_channels_last_timm_maps_are_returned_channels_first(tmp_path: Path) -> None:
    # timm's (and so transformers') feature extractor returns Swin and MambaOut maps as (B, H, W, C).
    config = transformers.TimmBackboneConfig(
        backbone="test_mambaout", use_pretrained_backbone=False, out_indices=[0, 3]
    )
    oracle = randomize_weights_(transformers.TimmBackbone(config)).eval()
    oracle.save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.clean and model.channels == oracle.channels == [16, 64]
    with torch.no_grad():
        reference = [fmap.permute(0, 3, 1, 2) for fmap in oracle(pixels()).feature_maps]
        ours = model(pixels()).feature_maps
    assert [tuple(fmap.shape) for fmap in ours] == [(2, 16, 16, 16), (2, 64, 2, 2)]
    assert_close_maps(ours, reference, atol=1e-5)


def test_checkpoint_of_a_truncated_transformers_model_loads(tmp_path: Path) -> None:
    # transformers (like timm) drops the modules after the deepest selected stage, so such a checkpoint lacks
    # them; we keep every stage, so they are reported as missing and initialised.
    config = transformers.TimmBackboneConfig(backbone="resnet10t", use_pretrained_backbone=False, out_indices=[1, 2])
    oracle = randomize_weights_(transformers.TimmBackbone(config)).eval()
    oracle.save_pretrained(tmp_path)
    model, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.unused_keys == []
    assert report.missing_keys and {key.split(".")[1] for key in report.missing_keys} == {"layer3", "layer4"}
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())
    with torch.no_grad():
        assert_close_maps(model(pixels()).feature_maps, oracle(pixels()).feature_maps, atol=1e-5)


def test_local_checkpoint_directory_loads_through_the_class(tmp_path: Path) -> None:
    model = randomize_weights_(TimmBackbone(TimmBackboneConfig(backbone="resnet10t", out_indices=[2, 4]))).eval()
    model.save_pretrained(tmp_path)
    for loaded in (TimmBackbone.from_pretrained(tmp_path), TimmBackbone.from_pretrained(str(tmp_path))):
        assert isinstance(loaded, TimmBackbone) and loaded.out_indices == [2, 4]
        with torch.no_grad():
            assert_close_maps(loaded(pixels()).feature_maps, model(pixels()).feature_maps, atol=0.0)


# -- the head-config path ---------------------------------------------------------------------------


def test_load_backbone_with_use_timm_backbone() -> None:
    model = load_backbone(
        {
            "backbone": "resnet18",
            "use_timm_backbone": True,
            "use_pretrained_backbone": False,
            "backbone_kwargs": {"out_indices": [1, 2]},
        }
    )
    assert isinstance(model, TimmBackbone)
    assert model.stage_names == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert model.out_features == ["layer1", "layer2"]
    assert model.channels == [64, 128]
    assert model.out_reductions == [4, 8]
    with torch.no_grad():
        maps = model.eval()(pixels(1)).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(1, 64, 16, 16), (1, 128, 8, 8)]


def test_backbone_kwargs_reach_timm() -> None:
    model = load_backbone(
        {
            "backbone": "convnext_atto",
            "use_timm_backbone": True,
            "backbone_kwargs": {"out_indices": [-1], "drop_path_rate": 0.2, "in_chans": 1},
        }
    )
    drop_rates = [module.drop_prob for module in model.modules() if type(module).__name__ == "DropPath"]
    assert drop_rates and max(drop_rates) == pytest.approx(0.2)
    assert model.config.num_channels == 1 and model.config.timm_kwargs == {"drop_path_rate": 0.2}
    assert model._backbone.stem_0.in_channels == 1
    with torch.no_grad():
        (fmap,) = model.eval()(torch.randn(1, 1, 64, 64)).feature_maps
    assert tuple(fmap.shape) == (1, 320, 2, 2)


def test_output_stride_dilates_and_updates_reductions() -> None:
    model = TimmBackbone(TimmBackboneConfig(backbone="resnet10t", output_stride=8, out_indices=[2, 3, 4])).eval()
    assert model.reductions == [2, 4, 8, 8, 8]
    with torch.no_grad():
        maps = model(pixels(1)).feature_maps
    assert [tuple(fmap.shape[2:]) for fmap in maps] == [(8, 8)] * 3


# -- forward and pruning ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "extra", "modules", "out_indices", "ran"),
    [
        ("resnet10t", {}, ["layer1", "layer2", "layer3", "layer4"], [1], ["layer1"]),
        ("mobilenetv3_small_050", {}, [f"blocks.{i}" for i in range(6)], [2], ["blocks.0", "blocks.1"]),
        (
            "test_vit",
            {},
            [f"model.blocks.{i}" for i in range(6)],
            [0, 2],
            ["model.blocks.0", "model.blocks.1", "model.blocks.2"],
        ),
        ("resnet10t", {"features_only": False}, ["layer1", "layer2", "layer3", "layer4"], [2], ["layer1", "layer2"]),
    ],
)
def test_forward_stops_at_the_deepest_requested_stage(
    backbone: str, extra: dict[str, Any], modules: list[str], out_indices: list[int], ran: list[str]
) -> None:
    model = TimmBackbone(TimmBackboneConfig(backbone=backbone, out_indices=out_indices, **extra)).eval()
    called: list[str] = []
    for name in modules:
        model._backbone.get_submodule(name).register_forward_hook(lambda *_, name=name: called.append(name))
    with torch.no_grad():
        model(pixels(1))
    assert called == ran


def test_whole_classification_model_with_features_only_false() -> None:
    model = randomize_weights_(TimmBackbone(TimmBackboneConfig(backbone="resnet10t", features_only=False))).eval()
    model.out_indices = [0, 1, 2, 3, 4]
    assert model._runner == "intermediates"
    assert "_backbone.fc.weight" in model.state_dict()  # the classifier is kept, as in timm's checkpoints
    reference = timm.create_model("resnet10t").eval()
    reference.load_state_dict({k.removeprefix("_backbone."): v for k, v in model.state_dict().items()})
    with torch.no_grad():
        expected = reference.forward_intermediates(pixels(), intermediates_only=True)
        assert_close_maps(model(pixels()).feature_maps, expected, atol=0.0)
        model.out_indices = [1]
        assert model.prune_unused_stages() == ["layer2", "layer3", "layer4"]
        assert "_backbone.fc.weight" not in model.state_dict()
        assert_close_maps(model(pixels()).feature_maps, expected[1:2], atol=0.0)


def test_wrong_channel_count_is_explained() -> None:
    model = TimmBackbone(TimmBackboneConfig(backbone="test_resnet"))
    with pytest.raises(ValueError, match=r"pixel_values has 1 channels but this timm backbone expects 3"):
        model(torch.zeros(1, 1, 32, 32))


# -- freeze_batch_norm_2d ---------------------------------------------------------------------------


def _norm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: value.clone()
        for name, value in model.state_dict().items()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "weight", "bias") and value.dim() == 1
    }


@pytest.mark.parametrize("backbone", ["resnet10t", "mobilenetv3_small_050"])
def test_freeze_batch_norm_2d_keeps_statistics_in_train_mode(backbone: str) -> None:
    config = TimmBackboneConfig(backbone=backbone, freeze_batch_norm_2d=True, out_indices=[-1])
    model = randomize_weights_(TimmBackbone(config))
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    frozen = [module for module in model.modules() if isinstance(module, (FrozenBatchNorm2d, FrozenBatchNormAct2d))]
    plain = TimmBackbone(TimmBackboneConfig(backbone=backbone, out_indices=[-1]))
    assert len(frozen) == sum(isinstance(module, nn.BatchNorm2d) for module in plain.modules()) > 0
    before = _norm_buffers(model)
    with torch.no_grad():
        in_eval = model.eval()(pixels()).feature_maps
    model.train()
    in_train = model(pixels()).feature_maps
    sum(fmap.pow(2).mean() for fmap in in_train).backward()
    after = _norm_buffers(model)
    assert after.keys() == before.keys() and all(torch.equal(after[key], before[key]) for key in before)
    assert_close_maps(in_train, in_eval, atol=1e-6)  # frozen norms normalise with the stored statistics
    # The control: an ordinary BatchNorm updates its running mean in train mode.
    randomize_weights_(plain).train()(pixels())
    norm = next(module for module in plain.modules() if isinstance(module, nn.BatchNorm2d))
    assert int(norm.num_batches_tracked) == 1


def test_freeze_and_unfreeze_methods_follow_the_config(tmp_path: Path) -> None:
    model = TimmBackbone(TimmBackboneConfig(backbone="test_resnet"))
    norms = sum(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    model.freeze_batch_norm_2d()
    assert model.config.freeze_batch_norm_2d is True
    assert sum(isinstance(module, FrozenBatchNorm2d) for module in model.modules()) == norms
    model.save_pretrained(tmp_path)
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert report.clean and any(isinstance(module, FrozenBatchNorm2d) for module in loaded.modules())
    model.unfreeze_batch_norm_2d()
    assert model.config.freeze_batch_norm_2d is False
    assert sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) == norms


# -- pretrained weights through timm ----------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A resnet10t classification model's state dict in timm's own format, as .safetensors and .pth."""
    directory = tmp_path_factory.mktemp("weights")
    state = randomize_weights_(timm.create_model("resnet10t")).state_dict()
    save_file(state, directory / "resnet10t.safetensors")
    torch.save(state, directory / "resnet10t.pth")
    return {"state": state, "directory": directory}


def _features_with(state: dict[str, torch.Tensor]) -> nn.Module:
    reference = timm.create_model("resnet10t", features_only=True, out_indices=(1, 3))
    kept = reference.state_dict().keys()  # timm drops the modules after the deepest selected stage
    reference.load_state_dict({key: value for key, value in state.items() if key in kept})
    return reference.eval()


@pytest.mark.parametrize("filename", ["resnet10t.safetensors", "resnet10t.pth"])
def test_pretrained_weights_from_a_local_file(timm_weights: dict[str, Any], filename: str, offline: None) -> None:
    path = str(timm_weights["directory"] / filename)
    config = TimmBackboneConfig(
        backbone="resnet10t", use_pretrained_backbone=True, pretrained_cfg_overlay={"file": path}, out_indices=[1, 3]
    )
    model = TimmBackbone(config).eval()
    assert torch.equal(model._backbone.conv1[0].weight, timm_weights["state"]["conv1.0.weight"])
    with torch.no_grad():
        assert_close_maps(model(pixels()).feature_maps, _features_with(timm_weights["state"])(pixels()), atol=0.0)


def test_pretrained_weights_from_a_local_timm_folder(
    timm_weights: dict[str, Any], tmp_path: Path, offline: None
) -> None:
    from timm.models import load_checkpoint
    from timm.models._hub import save_for_hf

    source = timm.create_model("resnet10t")
    load_checkpoint(source, str(timm_weights["directory"] / "resnet10t.safetensors"))
    save_for_hf(source, str(tmp_path), safe_serialization=True)
    name = f"local-dir:{tmp_path}"
    assert is_timm_model_name(name)
    model, report = TimmBackbone.from_pretrained(name, out_indices=[1, 3], output_loading_info=True)
    assert report.clean and not model.training
    # A name without a config.json reaches the plugin through core's load_backbone_from_name hook.
    again = AutoBackbone.from_pretrained(name, out_indices=[1, 3], dtype="float64")
    assert isinstance(again, TimmBackbone) and again._backbone.conv1[0].weight.dtype == torch.float64
    with torch.no_grad():
        assert_close_maps(again.float()(pixels()).feature_maps, model(pixels()).feature_maps, atol=1e-5)
    assert load_by_name("microsoft/resnet-50", {}) is None and load_by_name("no_such_timm_model", {}) is None
    # The parameter limit holds for timm names too, checked before any weight is read.
    message = r"TimmBackbone would have ([\d,]+) parameters \(counted on the meta device, nothing allocated\), above the limit of 1,000"
    with pytest.raises(ConfigError, match=message) as refused:
        AutoBackbone.from_pretrained(name, max_parameters=1000)
    # The count is timm's whole network (its classifier too), at least what the loaded backbone keeps.
    counted = int(re.search(message, str(refused.value)).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert counted >= sum(p.numel() for p in AutoBackbone.from_pretrained(name).parameters()) > 1000
    assert model.stage_names == ["act1", "layer1", "layer2", "layer3", "layer4"]
    with torch.no_grad():
        assert_close_maps(model(pixels()).feature_maps, _features_with(timm_weights["state"])(pixels()), atol=0.0)


def test_unreachable_weights_name_the_model_and_the_source(tmp_path: Path, offline: None) -> None:
    message = (
        r"cannot load the pretrained weights of timm model 'resnet10t' from the Hugging Face hub repository "
        r"'timm/resnet10t.c3_in1k': .*HF_HUB_OFFLINE is set"
    )
    config = TimmBackboneConfig(backbone="resnet10t", use_pretrained_backbone=True, cache_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match=message):
        TimmBackbone(config)
    with pytest.raises(CheckpointError, match=message):
        TimmBackbone.from_pretrained("resnet10t", cache_dir=tmp_path)
    for extra in ({}, {"use_timm_backbone": True}):
        with pytest.raises(CheckpointError, match=message):
            AutoBackbone.from_pretrained("resnet10t", cache_dir=tmp_path, **extra)
    with pytest.raises(CheckpointError, match=message):
        load_backbone(
            {
                "backbone": "resnet10t",
                "use_timm_backbone": True,
                "use_pretrained_backbone": True,
                "backbone_kwargs": {"cache_dir": str(tmp_path)},
            }
        )


def test_missing_local_weights_file_names_it(tmp_path: Path) -> None:
    overlay = {"file": str(tmp_path / "absent.safetensors")}
    config = TimmBackboneConfig(backbone="test_resnet", use_pretrained_backbone=True, pretrained_cfg_overlay=overlay)
    with pytest.raises(
        CheckpointError,
        match=r"of timm model 'test_resnet' from the local file .*absent.safetensors: FileNotFoundError",
    ):
        TimmBackbone(config)


def test_model_without_pretrained_weights_says_so() -> None:
    config = TimmBackboneConfig(backbone="mobilenetv2_035", use_pretrained_backbone=True)
    with pytest.raises(
        CheckpointError, match=r"'mobilenetv2_035' from nowhere: timm lists no pretrained weights for this model"
    ):
        TimmBackbone(config)


def test_unreachable_hub_model_config_is_explained(tmp_path: Path, offline: None) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"cannot read the timm config of 'hf-hub:timm/resnet10t.c3_in1k' from the Hugging Face hub repository "
        r"'timm/resnet10t.c3_in1k'.*HF_HUB_OFFLINE is set",
    ):
        TimmBackboneConfig(backbone="hf-hub:timm/resnet10t.c3_in1k", cache_dir=str(tmp_path))


def test_loading_a_checkpoint_never_fetches_timm_weights(tmp_path: Path, offline: None) -> None:
    # transformers 4.x wrote use_pretrained_backbone=True into TimmBackbone configs; loading such a checkpoint
    # builds the model on the meta device and fills it from the checkpoint, without asking timm for weights.
    model = randomize_weights_(TimmBackbone(TimmBackboneConfig(backbone="resnet10t"))).eval()
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"use_pretrained_backbone": false', '"use_pretrained_backbone": true'))
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert loaded.config.use_pretrained_backbone is True and report.clean
    with torch.no_grad():
        assert_close_maps(loaded(pixels()).feature_maps, model(pixels()).feature_maps, atol=0.0)


def test_load_timm_pretrained_rejects_hub_options_it_cannot_honour() -> None:
    with pytest.raises(ValueError, match=r"revision='v2' is not supported .*'hf-hub:<org>/<name>@v2'"):
        load_timm_pretrained("resnet10t", revision="v2")
    with pytest.raises(ValueError, match=r"local_files_only=True is not supported .*HF_HUB_OFFLINE=1"):
        load_timm_pretrained("resnet10t", local_files_only=True)


def test_timm_names_and_checkpoints_are_told_apart(tmp_path: Path) -> None:
    assert is_timm_model_name("resnet50") and is_timm_model_name("convnext_tiny.fb_in22k")
    assert is_timm_model_name("hf-hub:timm/resnet50.a1_in1k")
    assert not is_timm_model_name("not_a_model_at_all")
    assert is_timm_model_name("not_a_model_at_all", strict=False)
    assert not is_timm_model_name("microsoft/resnet-50")
    assert not is_timm_model_name(str(tmp_path)) and not is_timm_model_name(tmp_path)


# -- config and errors ------------------------------------------------------------------------------


def test_unknown_model_name_lists_close_matches() -> None:
    message = r"'resnet-18' is not a timm model name \(close matches: resnet18, "
    with pytest.raises(ConfigError, match=message):
        TimmBackboneConfig(backbone="resnet-18")
    with pytest.raises(ConfigError, match=message):
        load_backbone({"backbone": "resnet-18", "use_timm_backbone": True})
    with pytest.raises(ConfigError, match=message):
        TimmBackbone.from_pretrained("resnet-18")
    with pytest.raises(
        ConfigError, match=r"'convnxt_atto.d2_in1k' is not a timm model name \(close matches: convnext_atto"
    ):
        TimmBackboneConfig(backbone="convnxt_atto.d2_in1k")


def test_hub_repo_without_prefix_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"backbone='timm/resnet18.a1_in1k': .*Use 'hf-hub:timm/resnet18.a1_in1k'"):
        TimmBackboneConfig(backbone="timm/resnet18.a1_in1k")


def test_bad_out_indices_list_the_stage_names() -> None:
    names = r"\['act1', 'layer1', 'layer2', 'layer3', 'layer4'\]"
    with pytest.raises(ValueError, match=rf"out_indices \[5\] has indices \[5\] outside the 5 stages .*{names}"):
        TimmBackboneConfig(backbone="resnet18", out_indices=[5])
    with pytest.raises(ValueError, match=rf"names unknown stages \['stage4'\]; valid stage names are {names}"):
        TimmBackboneConfig(backbone="resnet18", out_features=["stage4"])
    model = TimmBackbone(TimmBackboneConfig(backbone="test_resnet"))
    with pytest.raises(ValueError, match=r"valid stage names are \['act1'"):
        model.out_indices = [7]


def test_missing_backbone_and_reserved_arguments_are_explained() -> None:
    with pytest.raises(ConfigError, match=r"TimmBackboneConfig.backbone is not set, .*: set it to a timm model name"):
        TimmBackbone(TimmBackboneConfig())  # the config alone constructs, as in transformers
    with pytest.raises(
        ConfigError, match=r"\['pretrained'\] cannot be passed to timm.create_model .*use_pretrained_backbone"
    ):
        TimmBackboneConfig(backbone="resnet18", pretrained=True)
    # A key the model does not take is kept but not passed (test_timm_config_compat.py); named in
    # backbone_kwargs it is passed, and timm's refusal is explained.
    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'depthz'.*remove or rename"):
        TimmBackboneConfig(backbone="resnet18", backbone_kwargs={"depthz": 3})
    with pytest.raises(ConfigError, match=r"in_chans=1 and num_channels=3 disagree"):
        TimmBackboneConfig(backbone="resnet18", in_chans=1, num_channels=3)
    with pytest.raises(ConfigError, match=r"extra field act_layer=.* is not a JSON value"):
        TimmBackboneConfig(backbone="resnet18", act_layer=nn.GELU)


def test_extra_fields_are_timm_kwargs_and_may_change_the_stages(tmp_path: Path) -> None:
    config = TimmBackboneConfig(backbone="test_vit", out_indices=[-1], transformers_version="5.23.0", dtype="float32")
    assert len(config.stage_names) == 6 and config.timm_kwargs == {}
    config.depth = 3
    assert config.stage_names == ["blocks.0", "blocks.1", "blocks.2"] and config.out_indices == [-1]
    config.out_indices = [2]
    with pytest.raises(ValueError, match=r"out_indices \[2\] has indices \[2\] outside the 2 stages"):
        config.depth = 2
    with pytest.raises(ConfigError, match=r"act_layer=.* is not a JSON value"):
        config.act_layer = nn.GELU
    assert config.timm_kwargs == {"depth": 3} and config.out_features == ["blocks.2"]
    data = config.to_dict()
    assert "_out_indices" not in data and "_out_features" not in data
    config.save_pretrained(tmp_path)
    assert TimmBackboneConfig.from_pretrained(tmp_path) == config
    assert len(TimmBackbone(config)._backbone.model.blocks) == 3


# -- packaging --------------------------------------------------------------------------------------


def _requirement_names(requirements: list[str]) -> set[str]:
    from packaging.requirements import Requirement

    return {Requirement(requirement).name.lower() for requirement in requirements}


def test_only_backbones_timm_depends_on_timm() -> None:
    pyprojects = [ROOT / "core" / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml"))]
    pyprojects = [path for path in pyprojects if not path.parent.name.startswith("_")]
    assert ROOT / "plugins" / "timm" / "pyproject.toml" in pyprojects and len(pyprojects) >= 3
    toml = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    depending_on_timm = []
    for path in pyprojects:
        project = toml.loads(path.read_text())["project"]
        names = _requirement_names(project.get("dependencies", []))
        assert "transformers" not in names, f"{project['name']} ({path}) depends on transformers"
        # transformers may appear only behind an opt-in extra of its own name (core's bridge to its heads).
        for extra, requirements in project.get("optional-dependencies", {}).items():
            in_extra = _requirement_names(requirements)
            assert "transformers" not in in_extra or extra == "transformers", f"{path}: extra {extra!r}"
            names |= in_extra
        if "timm" in names:
            depending_on_timm.append(project["name"])
    assert depending_on_timm == ["backbones-timm"]


def test_importing_the_plugin_imports_neither_torch_nor_timm() -> None:
    code = (
        "import sys, backbones_timm, backbones_timm._plugin\n"
        "from backbones._cli import main\n"
        "main(['list'])\n"
        "print(sorted(m for m in sys.modules if m in ('torch', 'timm') or m.startswith(('torch.', 'timm.'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "timm_backbone" in result.stdout and "backbones-timm" in result.stdout
    assert result.stdout.strip().endswith("[]"), result.stdout


# -- reparameterisation through timm's reparameterize_model -------------------------------------------


def test_reparameterize_uses_timms_helper() -> None:
    from timm.models.repghost import RepGhostModule

    config = TimmBackboneConfig(backbone="repghostnet_050", out_indices=[1, 2, 3, 4])
    model = randomize_weights_(TimmBackbone(config)).eval()
    assert model.supports_reparameterize
    modules = [module for module in model.modules() if isinstance(module, RepGhostModule)]
    assert modules and all(module.fusion_bn for module in modules)  # the branches a RepGhost module folds
    sizes = [64, 48]
    with torch.no_grad():
        expected = [model(pixels(size=size)).feature_maps for size in sizes]
    assert model.reparameterize() == 24  # every module timm's helper folds (RepGhost modules and their kin)
    assert model.is_reparameterized
    assert all(not module.fusion_bn for module in modules)
    with torch.no_grad():
        for size, maps in zip(sizes, expected):
            assert_parity(model(pixels(size=size)).feature_maps, maps, tolerance=1e-5)
    with pytest.raises(ReparameterizedError, match="cannot train"):
        model.train()


def test_model_without_rep_blocks_has_nothing_to_fold() -> None:
    model = TimmBackbone(TimmBackboneConfig(backbone="test_resnet", avg_down=False)).eval()
    assert not model.supports_reparameterize
    assert model.reparameterize() == 0
    assert model.is_reparameterized


def test_folded_timm_model_exports_with_dynamic_size() -> None:
    from torch.export import Dim

    config = TimmBackboneConfig(backbone="repghostnet_050", out_indices=[1, 2, 3, 4])
    model = randomize_weights_(TimmBackbone(config)).eval()
    model.reparameterize()
    dims = {2: Dim("height", min=64, max=512), 3: Dim("width", min=64, max=512)}
    program = torch.export.export(model, (pixels(),), dynamic_shapes={"pixel_values": dims})
    for size in (64, 96):
        images = pixels(size=size)
        with torch.no_grad():
            assert_parity(program.module()(images).feature_maps, model(images).feature_maps, tolerance=1e-5)
