"""out_features / out_indices: property tests against transformers' BackboneConfigMixin as the oracle."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.backbone_utils import BackboneConfigMixin

from backbones import align_out_features_out_indices

STAGES = ["stem", "stage1", "stage2", "stage3", "stage4"]


class _Oracle(BackboneConfigMixin):
    """transformers' mixin on a bare object: exactly its validation and alignment, nothing else."""

    def __init__(self, stage_names: list[str]) -> None:
        self.stage_names = stage_names


def _oracle(out_features: Any, out_indices: Any, stage_names: list[str]) -> tuple[list[str], list[int]] | None:
    oracle = _Oracle(stage_names)
    try:
        oracle.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
    except (ValueError, IndexError):
        # transformers 5.23 lets some out-of-range negative indices through its check and then fails
        # with IndexError while aligning; both are rejections.
        return None
    return oracle.out_features, oracle.out_indices


def _ours(out_features: Any, out_indices: Any, stage_names: list[str]) -> tuple[list[str], list[int]] | None:
    try:
        return align_out_features_out_indices(out_features, out_indices, stage_names)
    except ValueError as error:
        assert "valid stage names are" in str(error) or "stage_names is empty" in str(error), str(error)
        return None


@st.composite
def _requests(draw: st.DrawFn) -> tuple[Any, Any, list[str]]:
    count = draw(st.integers(min_value=1, max_value=6))
    stage_names = ["stem"] + [f"stage{index}" for index in range(1, count)]
    names = st.sampled_from([*stage_names, "stage9", "head"])
    out_features = draw(st.none() | st.lists(names, max_size=5))
    out_indices = draw(st.none() | st.lists(st.integers(min_value=-2 * count, max_value=2 * count), max_size=5))
    return out_features, out_indices, stage_names


@settings(max_examples=1500, deadline=None)
@given(_requests())
def test_accept_reject_and_alignment_match_transformers(request: tuple[Any, Any, list[str]]) -> None:
    out_features, out_indices, stage_names = request
    assert _ours(out_features, out_indices, stage_names) == _oracle(out_features, out_indices, stage_names)


@settings(max_examples=300, deadline=None)
@given(_requests())
def test_out_indices_tuples_are_stored_as_lists_and_out_features_tuples_refused(
    request: tuple[Any, Any, list[str]],
) -> None:
    out_features, out_indices, stage_names = request
    if out_indices is not None:
        result = _ours(out_features, tuple(out_indices), stage_names)
        assert result == _ours(out_features, out_indices, stage_names)
        if result is not None:
            assert type(result[0]) is list and type(result[1]) is list
    if out_features is not None:
        # transformers: "out_features must be a list"; the message here also says what to pass.
        with pytest.raises(ValueError, match=r"out_features must be a list of str, got tuple .*; pass out_features=\["):
            align_out_features_out_indices(tuple(out_features), out_indices, stage_names)


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
