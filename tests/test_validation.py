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
