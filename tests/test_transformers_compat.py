"""Code written against transformers' backbones runs unchanged on ours (issue 17), with transformers 5.23 as the oracle.

* the selection rules: core's functions against transformers' ``BackboneConfigMixin`` on generated stage names
  and selections (``None`` / list / tuple / out of range / unaligned), same accept/reject decision, same
  exception type, same aligned values;
* every installed plugin's config class against the transformers config of its ``model_type``;
* ``backbone_type`` on every plugin's backbone.

Where transformers crashes (``IndexError``) or lets an invalid value through, ours raises ``ValueError``: each
such case is named below and in docs/concepts.md ("Differences from transformers").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backbones
from backbones import (
    BackboneType,
    align_out_features_out_indices,
    get_aligned_output_features_output_indices,
    get_registry,
    verify_out_features_out_indices,
)
from backbones.testing import modules_loaded_by

transformers = pytest.importorskip("transformers")
from huggingface_hub.errors import StrictDataclassFieldValidationError  # noqa: E402
from transformers.backbone_utils import BackboneConfigMixin  # noqa: E402
from transformers.backbone_utils import BackboneType as TransformersBackboneType  # noqa: E402

REJECTED = "rejected with ValueError"
UNKNOWN = "NOT A STAGE"  # never generated as a stage name (the alphabet below has no space)


class _Stages(BackboneConfigMixin):
    """transformers' mixin on a bare object: exactly its rules, nothing else."""

    def __init__(self, stage_names: list[str] | None) -> None:
        self.stage_names = stage_names


def _their_aligned(out_features: Any, out_indices: Any, stage_names: Any) -> tuple[Any, Any]:
    stages = _Stages(stage_names)
    stages.set_output_features_output_indices(out_features, out_indices)
    return stages._out_features, stages._out_indices


def _their_verify(out_features: Any, out_indices: Any, stage_names: Any) -> None:
    stages = _Stages(stage_names)
    stages._out_features, stages._out_indices = out_features, out_indices
    stages.verify_out_features_out_indices()


def _outcome(call: Callable[[], Any]) -> Any:
    """The call's result, or REJECTED for a ValueError; a crash is reported by its exception type."""
    try:
        return call()
    except ValueError:
        return REJECTED
    except (IndexError, ZeroDivisionError) as error:
        return f"crash: {type(error).__name__}"


def _is_crash(outcome: Any) -> bool:
    return isinstance(outcome, str) and outcome.startswith("crash")


@st.composite
def _selections(draw: st.DrawFn) -> tuple[Any, Any, list[str]]:
    stage_names = draw(st.lists(st.text(alphabet="abcxyz_.0123", min_size=1, max_size=5), max_size=6, unique=True))
    count = len(stage_names)
    names = st.sampled_from([*stage_names, UNKNOWN])
    features = st.lists(names, max_size=4)
    indices = st.lists(st.integers(min_value=-2 * count - 2, max_value=2 * count + 2), max_size=4)
    out_features = draw(st.one_of(st.none(), features, features.map(tuple)))
    out_indices = draw(st.one_of(st.none(), indices, indices.map(tuple)))
    return out_features, out_indices, stage_names


@settings(max_examples=1500, deadline=None)
@given(_selections())
def test_aligning_matches_transformers_set_output_features_output_indices(
    selection: tuple[Any, Any, list[str]],
) -> None:
    out_features, out_indices, stage_names = selection
    theirs = _outcome(lambda: _their_aligned(out_features, out_indices, stage_names))
    ours = _outcome(lambda: get_aligned_output_features_output_indices(out_features, out_indices, stage_names))
    if _is_crash(theirs):
        # transformers 5.23 crashes with IndexError for an out-of-range negative index (-n - 1 passes its check
        # as (-n - 1) % n, then stage_names[-n - 1] fails) and for the default selection of no stages.
        assert ours == REJECTED
    else:
        assert ours == theirs
    if ours != REJECTED:
        assert type(ours[0]) is list and type(ours[1]) is list
    if isinstance(out_indices, tuple):  # stored as the list it would be given as
        assert ours == _outcome(lambda: align_out_features_out_indices(out_features, list(out_indices), stage_names))
    if ours == REJECTED:
        # Every rejection names the valid stages (or says there is none to select); a tuple of features says what
        # to pass instead.
        message = (
            r"out_features must be a list of str, got tuple .*; pass out_features=\["
            if isinstance(out_features, tuple)
            else r"valid stage names are|stage_names is empty"
        )
        with pytest.raises(ValueError, match=message):
            align_out_features_out_indices(out_features, out_indices, stage_names)


@settings(max_examples=400, deadline=None)
@given(_selections())
def test_verify_matches_transformers_function_level_check(selection: tuple[Any, Any, list[str]]) -> None:
    out_features, out_indices, stage_names = selection
    theirs = _outcome(lambda: _their_verify(out_features, out_indices, stage_names))
    ours = _outcome(lambda: verify_out_features_out_indices(out_features, out_indices, stage_names))
    count = len(stage_names)
    out_of_range = out_indices is not None and any(not -count <= index < count for index in out_indices)
    if theirs is None and out_of_range:
        # transformers' check lets an out-of-range negative index through (it tests index % n), and index 0
        # when there is no stage: it breaks its own "must be valid indices" rule. Ours refuses them.
        assert ours == REJECTED
    elif _is_crash(theirs):
        assert ours == REJECTED  # IndexError comparing features with an out-of-range negative index
    else:
        assert ours == theirs


@settings(max_examples=100, deadline=None)
@given(_selections())
def test_stage_names_none_is_a_value_error_as_in_transformers(selection: tuple[Any, Any, list[str]]) -> None:
    out_features, out_indices, _ = selection
    for theirs in (_their_aligned, _their_verify):
        with pytest.raises(ValueError, match="Stage_names must be set"):
            theirs(out_features, out_indices, None)
    for ours in (align_out_features_out_indices, verify_out_features_out_indices):
        with pytest.raises(ValueError, match="stage_names is None: the output stages can only be chosen once"):
            ours(out_features, out_indices, None)


STAGES = ["stem", "stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize(
    ("out_features", "out_indices", "message"),
    [
        # transformers: ValueError "out_features must be a list got <class 'tuple'>" (both functions).
        (("stage1",), None, r"out_features must be a list of str, got tuple \('stage1',\); pass out_features="),
        # transformers' function-level check wants a list; only the aligning function converts a tuple.
        (None, (1,), r"out_indices must be a list of int, got tuple \(1,\); pass out_indices=\[1\]"),
        # transformers: no error (-6 % 5 == 4 passes its check); ours names the range.
        (None, [-6], r"out_indices \[-6\] has indices \[-6\] outside the 5 stages \(valid: -5..4\)"),
        # transformers: no error from its function-level check (bool is an int); its strict configs refuse it.
        (None, [True], r"out_indices must contain only int values, got True"),
    ],
)
def test_function_level_verify_examples(out_features: Any, out_indices: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        verify_out_features_out_indices(out_features, out_indices, STAGES)
    assert f"valid stage names are {STAGES}" in str(caught.value)


def test_transformers_names_are_exported() -> None:
    assert get_aligned_output_features_output_indices is align_out_features_out_indices
    assert get_aligned_output_features_output_indices(None, (1, -1), STAGES) == (["stage1", "stage4"], [1, -1])
    assert verify_out_features_out_indices(["stage1"], [1], STAGES) is None
    for name in ("BackboneType", "verify_out_features_out_indices", "get_aligned_output_features_output_indices"):
        assert name in backbones.__all__


def test_exports_do_not_import_torch() -> None:
    code = (
        "import backbones\n"
        "backbones.BackboneType, backbones.verify_out_features_out_indices\n"
        "backbones.get_aligned_output_features_output_indices\n"
    )
    assert "torch" not in modules_loaded_by(code)


# -- backbone_type ----------------------------------------------------------------------------------


def test_backbone_type_has_transformers_values() -> None:
    assert {kind.name: kind.value for kind in BackboneType} == {
        kind.name: kind.value for kind in TransformersBackboneType
    }
    assert BackboneType.TIMM == "timm" and BackboneType("transformers") is BackboneType.TRANSFORMERS
    assert isinstance(BackboneType.TIMM, str)


MODEL_TYPES = get_registry().model_types()
# Each registered type once; an alias ("tipsv2", a full image-text checkpoint's type whose transformers config
# nests the vision config and has no stages) resolves to its type and is tested as that type.
CANONICAL_TYPES = sorted(entry.model_type for entry in get_registry().registrations())


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_plugin_backbone_has_its_backbone_type(model_type: str) -> None:
    model_class = get_registry().get(model_type).load_model_class()
    expected = BackboneType.TIMM if model_type == "timm_backbone" else BackboneType.TRANSFORMERS
    assert model_class.backbone_type is expected


@pytest.mark.usefixtures("registry")
def test_third_party_backbone_gets_backbone_type_from_the_base_class() -> None:
    from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

    assert "backbone_type" not in vars(ToyNetBackbone)
    model = ToyNetBackbone(ToyNetConfig())
    assert model.backbone_type is BackboneType.TRANSFORMERS and model.backbone_type == "transformers"


# -- every plugin's config against transformers' config of its model_type ----------------------------------

# The timm wrapper needs a model; transformers checks its selection when the model is built.
_TIMM = {"backbone": "test_resnet"}  # a tiny ResNet: resnet18's stage names


def _variants(names: list[str]) -> dict[str, dict[str, Any]]:
    count = len(names)
    return {
        "default": {},
        "stage_names=None": {"stage_names": None},
        "all None": {"out_features": None, "out_indices": None, "stage_names": None},
        "out_indices list": {"out_indices": [1, -1]},
        "out_indices tuple": {"out_indices": (1, -1)},
        "out_features list": {"out_features": [names[1], names[-1]]},
        "out_features last stage": {"out_features": [names[-1]]},
        "out_features tuple": {"out_features": (names[1],)},
        "both agree, indices tuple": {"out_features": [names[1]], "out_indices": (1,)},
        "both disagree": {"out_features": [names[1]], "out_indices": [2]},
        "index out of range": {"out_indices": [count]},
        "negative index out of range": {"out_indices": [-count - 1]},
        "indices unordered": {"out_indices": [2, 1]},
        "indices duplicate": {"out_indices": [1, 1 - count]},
        "unknown feature": {"out_features": [UNKNOWN]},
        "stage_names=None and out_features": {"stage_names": None, "out_features": [names[1]]},
    }


# transformers' TimmBackbone (5.23) sets out_indices to [-1] when none is given and then refuses any other
# out_features; ours derives out_indices from out_features (documented leniency).
_TIMM_LENIENT = {"out_features list", "stage_names=None and out_features"}


def _their_selection(model_type: str, overrides: dict[str, Any]) -> Any:
    config_class = transformers.CONFIG_MAPPING[model_type]
    try:
        if model_type == "timm_backbone":
            model = transformers.TimmBackbone(config_class(**_TIMM, **overrides))
            return list(model.out_features), list(model.out_indices)
        config = config_class(**overrides)
        return list(config.out_features), list(config.out_indices)
    except (ValueError, StrictDataclassFieldValidationError):
        # huggingface_hub's strict-dataclass error (a tuple for out_features) is not a ValueError; ours is.
        return REJECTED
    except IndexError:
        return "crash: IndexError"


def _our_selection(config_class: type, model_type: str, overrides: dict[str, Any]) -> Any:
    extra = _TIMM if model_type == "timm_backbone" else {}
    try:
        config = config_class(**extra, **overrides)
    except ValueError:
        return REJECTED
    return config.out_features, config.out_indices


@pytest.mark.parametrize("model_type", CANONICAL_TYPES)
def test_plugin_config_decisions_match_transformers(model_type: str) -> None:
    if model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {model_type!r} config (NAT was removed in 5.x)")
    config_class = get_registry().get(model_type).load_config_class()
    names = config_class(**(_TIMM if model_type == "timm_backbone" else {})).stage_names
    if model_type != "timm_backbone":
        assert names == transformers.CONFIG_MAPPING[model_type]().stage_names
    decisions = {}
    for label, overrides in _variants(names).items():
        theirs = _their_selection(model_type, overrides)
        ours = _our_selection(config_class, model_type, overrides)
        if _is_crash(theirs):
            expected = REJECTED  # an out-of-range negative index: transformers fails with IndexError
        elif model_type == "timm_backbone" and label in _TIMM_LENIENT:
            assert theirs == REJECTED
            features = overrides["out_features"]
            expected = (features, [names.index(name) for name in features])
        else:
            expected = theirs
        decisions[label] = (ours, expected)
    assert {label: ours for label, (ours, _) in decisions.items()} == {
        label: expected for label, (_, expected) in decisions.items()
    }
