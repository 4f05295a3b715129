"""backbones.validation: config rules shared by several architectures."""

from __future__ import annotations

import pytest

from backbones.validation import square_patch_size


def test_square_patch_size_accepts_an_int_or_a_square_pair() -> None:
    assert square_patch_size(16, example=16) == 16
    assert square_patch_size([4, 4], example=4) == 4
    assert square_patch_size((14, 14), example=14) == 14
    assert square_patch_size("x", example=4) == "x", "non-sequences are left to the field's own type check"


@pytest.mark.parametrize("value", [[8, 4], [4], (4, 4, 4)])
def test_square_patch_size_rejects_other_shapes(value: object) -> None:
    with pytest.raises(
        ValueError,
        match=rf"^patch_size must be one int or a square pair such as \[14, 14\], got \[{', '.join(map(str, value))}\]$",
    ):
        square_patch_size(value, example=14)


def test_heads_must_divide_the_width() -> None:
    from backbones.validation import check_heads_divide

    check_heads_divide(768, 12)
    with pytest.raises(ValueError, match=r"^num_attention_heads=5 does not divide hidden_size=16; choose a head count"):
        check_heads_divide(16, 5)


@pytest.mark.parametrize(
    ("num_heads", "message"),
    [
        ([1, 2], r"num_heads has 2 entries but depths has 3; give num_heads one head count per stage"),
        ([1, 2, 0], r"num_heads\[2\]=0 must be a positive divisor of stage 3's width embed_dim \* 2\*\*2 = 32"),
        ([1, 3, 4], r"num_heads\[1\]=3 must be a positive divisor of stage 2's width embed_dim \* 2\*\*1 = 16"),
    ],
)
def test_stage_heads_are_checked_per_stage(num_heads: list[int], message: str) -> None:
    from backbones.validation import check_stage_heads

    check_stage_heads(8, [1, 1, 1], [1, 2, 4])
    with pytest.raises(ValueError, match=message):
        check_stage_heads(8, [1, 1, 1], num_heads)


def _annotated_config() -> type:
    from typing import Annotated

    from pydantic import Field

    from backbones import BackboneConfig
    from backbones.validation import ActivationName, PositiveInts, PositivePerStage, square_patch

    class AnnotatedConfig(BackboneConfig):
        model_type = "annotated-test"
        hidden_act: ActivationName = "gelu"
        depths: PositivePerStage = [1, 1]
        strides: PositiveInts = [2, 1]
        patch_size: Annotated[int, square_patch(8)] = Field(default=8, ge=1)

        @property
        def stage_names(self) -> list[str]:
            from backbones.validation import numbered_stage_names

            return numbered_stage_names(len(self.depths))

    return AnnotatedConfig


def test_annotated_field_types_validate_and_name_the_field() -> None:
    from backbones import ConfigError

    config_class = _annotated_config()
    config = config_class(patch_size=[4, 4], depths=[2, 3, 1], hidden_act="relu")
    assert (config.patch_size, config.depths, config.hidden_act) == (4, [2, 3, 1], "relu")
    assert config.stage_names == ["stem", "stage1", "stage2", "stage3"]
    cases = [
        ({"hidden_act": "swishy"}, r"hidden_act 'swishy' is not supported; set hidden_act to one of \['gelu'"),
        ({"depths": [1, 0]}, r"depths must list one positive integer per stage, got \[1, 0\]"),
        ({"depths": []}, r"depths must list one positive integer per stage, got \[\]"),
        ({"strides": [2, 0]}, r"strides must be a non-empty list of positive integers, got \[2, 0\]"),
        ({"patch_size": [4, 8]}, r"patch_size must be one int or a square pair such as \[8, 8\], got \[4, 8\]"),
        ({"patch_size": 0}, r"patch_size"),
    ]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message):
            config_class(**fields)


def test_numbered_stage_names_and_image_pair() -> None:
    from backbones.validation import image_pair, numbered_stage_names

    assert numbered_stage_names(0) == ["stem"]
    assert numbered_stage_names(2) == ["stem", "stage1", "stage2"]
    assert image_pair(224) == (224, 224)
    assert image_pair((32, 48)) == (32, 48)
    assert image_pair([40, 56]) == (40, 56)


def test_hidden_sizes_per_stage() -> None:
    from backbones.validation import check_hidden_sizes_per_stage

    check_hidden_sizes_per_stage([8, 16], [1, 2])
    with pytest.raises(
        ValueError,
        match=r"^hidden_sizes has 1 entries but depths has 2; give one channel count and one depth per stage "
        r"\(len\(hidden_sizes\) == len\(depths\)\)$",
    ):
        check_hidden_sizes_per_stage([8], [1, 2])


def test_layer_indices_must_name_layers() -> None:
    from backbones.validation import check_layer_indices

    check_layer_indices("window_block_indices", [0, 3], 4)
    with pytest.raises(
        ValueError,
        match=r"^window_block_indices \[4, -1\] are not layers of this model; use 0-based layer indices "
        r"from 0 to num_hidden_layers - 1 = 3$",
    ):
        check_layer_indices("window_block_indices", [0, 4, -1], 4)


def test_image_must_hold_patches_and_optionally_a_square_grid() -> None:
    from backbones.validation import check_image_holds_patches

    check_image_holds_patches("image_size", (32, 64), 16)
    with pytest.raises(ValueError, match=r"^image_size \(8, 64\) is smaller than patch_size 16; set image_size >= "):
        check_image_holds_patches("image_size", (8, 64), 16)
    with pytest.raises(
        ValueError,
        match=r"^pretrain_image_size \(32, 64\) gives a 2x4 grid of patches, but the absolute position table is a "
        r"square grid; use a square pretrain_image_size$",
    ):
        check_image_holds_patches("pretrain_image_size", (32, 64), 16, square_grid=True)


def test_mlp_ratio_must_leave_hidden_units() -> None:
    from backbones.validation import check_positive_mlp_ratio

    check_positive_mlp_ratio(0.25, 4)
    with pytest.raises(ValueError, match=r"^mlp_ratio must be positive \(the MLP is mlp_ratio \* hidden_size wide\)"):
        check_positive_mlp_ratio(0, 16)
    with pytest.raises(ValueError, match=r"^mlp_ratio=0.1 leaves the MLP with no hidden units; raise mlp_ratio$"):
        check_positive_mlp_ratio(0.1, 4)


def test_dilate_stages_follows_timms_rule() -> None:
    from backbones.validation import DilatedStage, dilate_stages

    strides = [1, 2, 2, 2]
    assert [plan.reduction for plan in dilate_stages(strides, 32, stem_stride=4)] == [4, 8, 16, 32]
    assert dilate_stages(strides, 8, stem_stride=4) == [
        DilatedStage(stride=1, dilation=1, first_dilation=1, reduction=4),
        DilatedStage(stride=2, dilation=1, first_dilation=1, reduction=8),
        DilatedStage(stride=1, dilation=2, first_dilation=1, reduction=8),
        DilatedStage(stride=1, dilation=4, first_dilation=2, reduction=8),
    ]
    # 32 dilates nothing, even past it (a ResNet downsampling in its first stage reaches 64).
    assert [plan.reduction for plan in dilate_stages([2, 2, 2, 2], 32, stem_stride=4)] == [8, 16, 32, 64]
    assert [plan.reduction for plan in dilate_stages([2, 2, 2, 2], 16, stem_stride=4)] == [8, 16, 16, 16]
    with pytest.raises(ValueError, match=r"^output_stride=8 is below the stem's stride 16, which dilation cannot undo"):
        dilate_stages(strides, 8, stem_stride=16)


def test_output_stride_field_lists_the_valid_values() -> None:
    from pydantic import BaseModel, ValidationError

    from backbones.validation import OutputStride

    class Config(BaseModel):
        output_stride: OutputStride = 32

    assert Config(output_stride=16).output_stride == 16
    with pytest.raises(ValidationError, match=r"output_stride must be one of \[8, 16, 32\] \(32: no dilation.*got 12"):
        Config(output_stride=12)
