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
