"""out_features / out_indices: alignment examples and the message of each rejection.

The property tests against transformers' ``BackboneConfigMixin`` (same accept/reject decision and aligned values
on generated selections, tuples stored as lists, every rejection naming the valid stages) are in
test_transformers_compat.py, beside the other checks against transformers.
"""

from __future__ import annotations

from typing import Any

import pytest

from backbones import align_out_features_out_indices

STAGES = ["stem", "stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize(
    ("out_features", "out_indices", "expected"),
    [
        (None, None, (["stage4"], [4])),
        (None, [-1], (["stage4"], [-1])),
        (None, [0, -2], (["stem", "stage3"], [0, -2])),
        (["stage1", "stage3"], None, (["stage1", "stage3"], [1, 3])),
        (["stage2"], [2], (["stage2"], [2])),
        (["stage4"], [-1], (["stage4"], [-1])),
        ([], None, ([], [])),
    ],
)
def test_alignment_examples(out_features: Any, out_indices: Any, expected: tuple[list[str], list[int]]) -> None:
    assert align_out_features_out_indices(out_features, out_indices, STAGES) == expected


@pytest.mark.parametrize(
    ("out_features", "out_indices", "message"),
    [
        (["stage7"], None, r"out_features \['stage7'\] names unknown stages \['stage7'\]"),
        (["stage1", "stage1"], None, "contains duplicates"),
        (["stage2", "stage1"], None, r"must follow the order of the stages: use \['stage1', 'stage2'\]"),
        (None, [5], r"out_indices \[5\] has indices \[5\] outside the 5 stages \(valid: -5..4\)"),
        # transformers raises IndexError here (-7 % 5 passes its check); we say what is wrong.
        (None, [-7], r"out_indices \[-7\] has indices \[-7\] outside the 5 stages"),
        (None, [1, -4], r"selects a stage twice \(as positions \[1, 1\]\)"),
        (None, [-1, 0], r"must follow the order of the stages: use \[0, -1\]"),
        (["stage1"], [2], r"name different stages \(the indices select \['stage2'\]\)"),
        (["stage1"], [1, 2], "name different stages"),
        ("stage1", None, "out_features must be a list"),
        (
            ("stage1",),
            None,
            r"out_features must be a list of str, got tuple \('stage1',\); pass out_features=\['stage1'\]",
        ),
        (None, 1, "out_indices must be a list"),
        (None, ["1"], "out_indices must contain only int values"),
        (None, [True], "out_indices must contain only int values"),
    ],
)
def test_rejections_name_the_value_and_the_stages(out_features: Any, out_indices: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        align_out_features_out_indices(out_features, out_indices, STAGES)
    assert f"valid stage names are {STAGES}" in str(caught.value)


def test_empty_stage_list_has_no_default_stage() -> None:
    with pytest.raises(ValueError, match="stage_names is empty: there is no last stage to select by default"):
        align_out_features_out_indices(None, None, [])
    # As transformers: an explicitly empty selection is valid, even of no stages.
    assert align_out_features_out_indices([], None, []) == ([], [])


def test_stage_names_none_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="stage_names is None: the output stages can only be chosen once"):
        align_out_features_out_indices(None, [0], None)
