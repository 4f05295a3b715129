"""The necks (backbones.necks): each passes the conformance kit as a backbone of its own, saves and loads
with its pyramid's weights, wraps an existing backbone, and explains bad configs; ``output_shape()``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from backbones import AutoBackbone, AutoBackboneConfig, Backbone, BackboneConfig, ConfigError
from backbones.necks import FeaturePyramid, FeaturePyramidConfig, SimpleFeaturePyramid, SimpleFeaturePyramidConfig
from backbones.testing import BackboneConformance, assert_close_maps, randomize_weights_

DINOV2 = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16, 24], "depths": [1, 1, 1]}


def dinov2_config(**overrides: Any) -> BackboneConfig:
    return AutoBackboneConfig.for_model("dinov2", **{**DINOV2, **overrides})


def resnet_config(**overrides: Any) -> BackboneConfig:
    return AutoBackboneConfig.for_model("resnet", **{**RESNET, **overrides})


def pixels(height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))


# -- the conformance kit ----------------------------------------------------------------------------


class _NeckConformance(BackboneConformance):
    bad_config_value = ("out_channels", 0, "out_channels=0: Input should be greater than 0")

    def test_default_selection_is_last_stage(self) -> None:
        """Replaces the kit's check: a neck's default selection is its whole pyramid, not its last stage."""
        config = self.make_config()
        levels = config.level_names  # type: ignore[attr-defined]
        assert config.out_features == levels == config.stage_names[-len(levels) :]
        count = len(config.stage_names)
        assert config.out_indices == list(range(count - len(levels), count))

    # The deployment checks (export, ONNX, two-process DDP/FSDP2) take most of this module's time.
    @pytest.mark.slow
    def test_export_with_dynamic_size(self, request: pytest.FixtureRequest) -> None:
        super().test_export_with_dynamic_size(request)

    @pytest.mark.slow
    def test_onnx_export_matches_eager(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        super().test_onnx_export_matches_eager(request, tmp_path)

    @pytest.mark.slow
    def test_distributed_training_ddp_and_fsdp2(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        super().test_distributed_training_ddp_and_fsdp2(request, tmp_path)


class TestSimpleFeaturePyramidConformance(_NeckConformance):
    """ViTDet's pyramid over a tiny DINOv2 (stride 8): levels at strides 2, 4, 8 and 16."""

    model_type = "simple_feature_pyramid"
    # Multiples of 16 (the deepest level): the ViT floors, the pyramid's pooling rounds up, and they agree.
    input_sizes = ((64, 64), (96, 48))
    spatial_rounding = "floor"
    export_range = (32, 256)
    export_multiple = 16

    def make_config(self, **overrides: Any) -> SimpleFeaturePyramidConfig:
        return SimpleFeaturePyramidConfig(backbone_config=dinov2_config(), out_channels=8, **overrides)


class TestFeaturePyramidConformance(_NeckConformance):
    """An FPN over a tiny ResNet's stages 1 to 3 (strides 4, 8, 16)."""

    model_type = "feature_pyramid"
    input_sizes = ((64, 64), (50, 38))
    spatial_rounding = "ceil"
    export_range = (17, 256)

    def make_config(self, **overrides: Any) -> FeaturePyramidConfig:
        return FeaturePyramidConfig(backbone_config=resnet_config(out_indices=[1, 2, 3]), out_channels=8, **overrides)


# -- stages, levels and selection -------------------------------------------------------------------


def test_simple_pyramid_stages_strides_and_maps() -> None:
    vit = AutoBackbone.from_config(dinov2_config(patch_size=16))
    neck = SimpleFeaturePyramid.from_backbone(vit, out_channels=8)
    assert neck.stage_names == ["stem", "stage1", "stage2", "p2", "p3", "p4", "p5"]
    assert neck.output_shape() == {"p2": (8, 4), "p3": (8, 8), "p4": (8, 16), "p5": (8, 32)}
    with torch.no_grad():
        maps = neck(pixels()).feature_maps
    assert [tuple(fmap.shape) for fmap in maps] == [(2, 8, 16, 16), (2, 8, 8, 8), (2, 8, 4, 4), (2, 8, 2, 2)]
    # ViTDet's layout: two transposed convolutions (with a norm and GELU between) for x4, one for x2, a pool for /2.
    assert [type(m).__name__ for m in neck.levels["p2"].scale] == [
        "ConvTranspose2d",
        "LayerNorm2d",
        "GELU",
        "ConvTranspose2d",
    ]
    assert [type(m).__name__ for m in neck.levels["p5"].scale] == ["MaxPool2d"]
    assert len(neck.levels["p4"].scale) == 0


def test_feature_pyramid_top_down_values() -> None:
    """p3 is the 3x3 output of (lateral(stage2) + nearest-upsampled (lateral(stage3)))."""
    neck = AutoBackbone.from_config(
        FeaturePyramidConfig(backbone_config=resnet_config(out_indices=[1, 2, 3]), out_channels=8)
    )
    randomize_weights_(neck, 0)
    neck.eval()
    with torch.no_grad():
        p2, p3, p4 = neck(pixels()).feature_maps
        stage1, stage2, stage3 = neck.backbone(pixels()).feature_maps
        levels = neck.levels
        top = levels["p4"].lateral(stage3)
        merged = levels["p3"].lateral(stage2) + torch.nn.functional.interpolate(top, size=stage2.shape[-2:])
        shallow = levels["p2"].lateral(stage1) + torch.nn.functional.interpolate(merged, size=stage1.shape[-2:])
        expected = [levels["p2"].output(shallow), levels["p3"].output(merged), levels["p4"].output(top)]
        assert_close_maps([p2, p3, p4], expected, atol=1e-6)
    assert neck.output_shape() == {"p2": (8, 4), "p3": (8, 8), "p4": (8, 16)}


def test_selecting_a_wrapped_stage_returns_its_map_unchanged() -> None:
    vit = AutoBackbone.from_config(dinov2_config(), out_indices=[1, 2])
    randomize_weights_(vit, 0)
    vit.eval()
    with torch.no_grad():
        reference = vit(pixels()).feature_maps
    neck = SimpleFeaturePyramid.from_backbone(vit, out_channels=8, out_features=["stage1", "stage2", "p3"])
    with torch.no_grad():
        stage1, stage2, p3 = neck(pixels()).feature_maps
    assert_close_maps([stage1, stage2], reference, atol=0.0)
    assert tuple(p3.shape) == (2, 8, 8, 8)
    assert neck.output_shape() == {"stage1": (16, 8), "stage2": (16, 8), "p3": (8, 8)}


def test_output_shape_of_plain_backbones_matches_their_maps() -> None:
    for config in (
        resnet_config(out_indices=[1, 2, 3]),
        dinov2_config(out_indices=[-1]),
        AutoBackboneConfig.for_model(
            "swin", embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2, out_indices=[1, 2]
        ),
    ):
        model = AutoBackbone.from_config(config).eval()
        with torch.no_grad():
            maps = model(pixels()).feature_maps
        measured = {name: (fmap.shape[1], 64 // fmap.shape[-1]) for name, fmap in zip(model.out_features, maps)}
        assert model.output_shape() == measured
    resnet = AutoBackbone.from_config(resnet_config(out_indices=[1, 2, 3]))
    assert resnet.output_shape() == {"stage1": (8, 4), "stage2": (16, 8), "stage3": (24, 16)}


# -- wrapping, freezing, saving --------------------------------------------------------------------


def test_from_backbone_keeps_weights_and_frozen_stages() -> None:
    vit = AutoBackbone.from_config(dinov2_config(patch_size=16))
    randomize_weights_(vit, 3)
    state = {key: value.clone() for key, value in vit.state_dict().items()}
    vit.freeze_stages(2)
    neck = SimpleFeaturePyramid.from_backbone(vit, out_channels=8)
    assert neck.backbone is vit
    for key, value in state.items():
        assert torch.equal(neck.state_dict()[f"backbone.{key}"], value), key
    assert neck.frozen_stages == vit.frozen_stages == ["stem", "stage1"]
    frozen = {id(p) for position in (0, 1) for m in vit._stage_modules(position) for p in m.parameters()}
    assert all(p.requires_grad == (id(p) not in frozen) for p in neck.parameters())
    assert neck.freeze_stages(0) == [] and vit.frozen_stages == []


def test_freeze_stages_counts_the_wrapped_backbones_stages() -> None:
    neck = AutoBackbone.from_config(
        FeaturePyramidConfig(backbone_config=resnet_config(out_indices=[1, 2, 3]), out_channels=8)
    )
    assert neck.freeze_stages(2) == ["stem", "stage1"]
    assert neck.backbone.frozen_stages == ["stem", "stage1"]
    assert all(p.requires_grad for p in neck.levels.parameters())
    assert neck.freeze_batch_norm() == sum(
        1 for m in neck.backbone.modules() if type(m).__name__ == "FrozenBatchNorm2d"
    )


def test_save_and_load_with_the_pyramid_weights(tmp_path: Path) -> None:
    vit = AutoBackbone.from_config(dinov2_config(patch_size=16))
    neck = SimpleFeaturePyramid.from_backbone(vit, out_channels=8, scale_factors=[2.0, 1.0])
    randomize_weights_(neck, 5)
    neck.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "simple_feature_pyramid" and saved["backbone_config"]["model_type"] == "dinov2"
    assert saved["architectures"] == ["SimpleFeaturePyramid"] and saved["out_features"] == ["p3", "p4"]
    loaded, report = AutoBackbone.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is SimpleFeaturePyramid and report.clean, str(report)
    assert any(key.startswith("levels.p3.scale.0.") for key in loaded.state_dict())
    for key, value in neck.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    neck.eval()
    with torch.no_grad():
        assert_close_maps(loaded(pixels()).feature_maps, neck(pixels()).feature_maps, atol=0.0)


def test_wrapped_config_freezing_applies_when_built_and_when_loaded(tmp_path: Path) -> None:
    """The wrapped backbone's RT-DETR-style freeze_at is applied after a load too (a load builds on meta)."""
    config = FeaturePyramidConfig(backbone_config=resnet_config(out_indices=[1, 2, 3], freeze_at=1), out_channels=8)
    neck = AutoBackbone.from_config(config)
    assert neck.frozen_stages == ["stem", "stage1"] == neck.backbone.frozen_stages
    neck.save_pretrained(tmp_path)
    loaded = AutoBackbone.from_pretrained(tmp_path)
    assert loaded.frozen_stages == ["stem", "stage1"] == loaded.backbone.frozen_stages
    assert not any(p.requires_grad for m in loaded.backbone._stage_modules(1) for p in m.parameters())


def test_registered_by_backbones_core() -> None:
    from backbones import get_registry

    for model_type in ("simple_feature_pyramid", "feature_pyramid"):
        assert get_registry().get(model_type).distribution == "backbones-core"


# -- bad configs -------------------------------------------------------------------------------------


def test_fractional_strides_are_explained() -> None:
    with pytest.raises(
        ConfigError,
        match=r"'stage2' has stride 14, so scale_factors \[4.0\] give strides \[3.5\], which are not whole pixels; "
        r"choose scale_factors from \[2.0, 1.0, 0.5, 0.25, 0.125\]",
    ):
        SimpleFeaturePyramidConfig(backbone_config=dinov2_config(patch_size=14))
    config = SimpleFeaturePyramidConfig(
        backbone_config=dinov2_config(patch_size=14), scale_factors=[2.0, 1.0, 0.5, 0.25]
    )
    assert config.level_names == ["stride7", "stride14", "stride28", "stride56"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scale_factors": [3.0]}, r"scale_factors=\[3.0\]: \[3.0\] are not powers of two"),
        ({"scale_factors": [1.0, 2.0]}, "must be distinct and in decreasing order"),
        ({"in_feature": "stage9"}, r"in_feature names 'stage9', which is not a stage of the wrapped dinov2 backbone"),
        ({"norm": "batch"}, r"norm='batch': Input should be 'none' or 'layer_norm'"),
    ],
)
def test_bad_simple_pyramid_fields_are_explained(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SimpleFeaturePyramidConfig(backbone_config=dinov2_config(), **fields)


def test_bad_feature_pyramid_inputs_are_explained() -> None:
    with pytest.raises(ConfigError, match=r"have strides \[4, 4, 8\]; each pyramid level needs its own stride"):
        FeaturePyramidConfig(backbone_config=resnet_config(out_indices=[0, 1, 2]))
    with pytest.raises(ConfigError, match=r"in_features \['stage2', 'stage1'\] must be in stage order"):
        FeaturePyramidConfig(backbone_config=resnet_config(), in_features=["stage2", "stage1"])
    with pytest.raises(ConfigError, match="must be the wrapped backbone's config"):
        FeaturePyramidConfig(backbone_config={"hidden_sizes": [8]})
    config = FeaturePyramidConfig(backbone_config=resnet_config(), in_features=["stage2", "stage3"])
    assert config.level_names == ["p3", "p4"]


def test_wrapping_a_pruned_backbone_is_refused() -> None:
    model: Backbone = AutoBackbone.from_config(resnet_config(out_indices=[1]))
    model.prune_unused_stages()
    with pytest.raises(ValueError, match="cannot wrap a pruned ResNetBackbone"):
        FeaturePyramid.from_backbone(model)


# -- the docs' scripts ------------------------------------------------------------------------------


def docs_scripts(page: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``."""
    text = (Path(__file__).resolve().parent.parent / "docs" / page).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


@pytest.mark.parametrize("index", range(2))
def test_docs_necks_scripts_run_as_written(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scripts = docs_scripts("necks.md")
    assert len(scripts) == 2
    monkeypatch.chdir(tmp_path)
    exec(compile(scripts[index], f"docs/necks.md script {index + 1}", "exec"), {"__name__": "__main__"})
