"""The one place that owns `out_features` / `out_indices` semantics.

The rules are those of transformers' ``BackboneConfigMixin`` (5.23) and of the function-level
``verify_out_features_out_indices`` / ``get_aligned_output_features_output_indices`` of transformers 4.x:
both unset selects the last stage, one set derives the other, both set must name the same stages.
``out_features`` must be a list (a tuple is refused, as transformers refuses it); ``out_indices`` must be a
list for :func:`verify_out_features_out_indices` and may be a tuple for the aligning functions, which store
a list. Indices may be negative and are kept as given. Every rejection is a ``ValueError`` that names the
bad value and lists the valid stage names; where transformers crashes instead (``IndexError`` for an
out-of-range negative index) or lets an invalid value through, docs/concepts.md says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "align_out_features_out_indices",
    "get_aligned_output_features_output_indices",
    "positive_indices",
    "verify_out_features_out_indices",
]


def _stage_list(stage_names: Sequence[str] | None) -> list[str]:
    if stage_names is None:
        raise ValueError(
            "stage_names is None: the output stages can only be chosen once the backbone's stage names are "
            "known; pass every stage name, shallowest first"
        )
    if isinstance(stage_names, str):
        raise ValueError(f"stage_names must be a list of stage names, got the string {stage_names!r}")
    return list(stage_names)


def _check_list(value: object, name: str, item_type: type, stage_names: list[str]) -> list[Any]:
    if not isinstance(value, list):
        hint = f"; pass {name}={list(value)!r}" if isinstance(value, tuple) else ""
        raise ValueError(
            f"{name} must be a list of {item_type.__name__}, got {type(value).__name__} {value!r}{hint}; "
            f"valid stage names are {stage_names}"
        )
    for item in value:
        # bool is an int subclass, but [True] is never a meaningful stage index.
        if not isinstance(item, item_type) or isinstance(item, bool):
            raise ValueError(
                f"{name} must contain only {item_type.__name__} values, got {item!r} in {value}; "
                f"valid stage names are {stage_names}"
            )
    return value


def positive_indices(out_indices: Sequence[int], num_stages: int) -> list[int]:
    """Map possibly negative stage indices to their non-negative equivalents."""
    return [index + num_stages if index < 0 else index for index in out_indices]


def _check_features(out_features: list[str], stage_names: list[str]) -> None:
    unknown = [name for name in out_features if name not in stage_names]
    if unknown:
        raise ValueError(
            f"out_features {out_features} names unknown stages {unknown}; valid stage names are {stage_names}"
        )
    if len(set(out_features)) != len(out_features):
        raise ValueError(f"out_features {out_features} contains duplicates; valid stage names are {stage_names}")
    ordered = [name for name in stage_names if name in out_features]
    if out_features != ordered:
        raise ValueError(
            f"out_features {out_features} must follow the order of the stages: use {ordered}; "
            f"valid stage names are {stage_names}"
        )


def _check_indices(out_indices: list[int], stage_names: list[str]) -> None:
    count = len(stage_names)
    bad = [index for index in out_indices if not -count <= index < count]
    if bad:
        valid = f"valid: {-count}..{count - 1}" if count else "there are none"
        raise ValueError(
            f"out_indices {out_indices} has indices {bad} outside the {count} stages ({valid}); "
            f"valid stage names are {stage_names}"
        )
    positive = positive_indices(out_indices, count)
    if len(set(positive)) != len(positive):
        raise ValueError(
            f"out_indices {out_indices} selects a stage twice (as positions {positive}); valid stage names are {stage_names}"
        )
    if positive != sorted(positive):
        ordered = [given for _, given in sorted(zip(positive, out_indices))]
        raise ValueError(
            f"out_indices {out_indices} must follow the order of the stages: use {ordered}; "
            f"valid stage names are {stage_names}"
        )


def verify_out_features_out_indices(
    out_features: Sequence[str] | None,
    out_indices: Sequence[int] | None,
    stage_names: Sequence[str] | None,
) -> None:
    """Check a selection of output stages without aligning it (transformers 4.x's function of this name).

    Args:
        out_features: Stage names to output (a list), or ``None``.
        out_indices: Stage indices to output (a list; negative allowed), or ``None``.
        stage_names: All stage names of the backbone, in order.

    Raises:
        ValueError: ``stage_names`` is ``None``; a value is not a list (tuples included, as in
            transformers); an unknown stage, an index out of range, a duplicate, stages out of order, or
            features and indices that disagree.
    """
    names = _stage_list(stage_names)
    features = None if out_features is None else _check_list(out_features, "out_features", str, names)
    indices = None if out_indices is None else _check_list(out_indices, "out_indices", int, names)
    if features is not None:
        _check_features(features, names)
    if indices is not None:
        _check_indices(indices, names)
    if features is not None and indices is not None and features != [names[index] for index in indices]:
        raise ValueError(
            f"out_features {features} and out_indices {indices} name different stages "
            f"(the indices select {[names[index] for index in indices]}); set only one of them, "
            f"or make them agree; valid stage names are {names}"
        )


def align_out_features_out_indices(
    out_features: Sequence[str] | None,
    out_indices: Sequence[int] | None,
    stage_names: Sequence[str] | None,
) -> tuple[list[str], list[int]]:
    """Validate and align the requested output stages.

    The rules of transformers' ``set_output_features_output_indices``: the arguments of
    :func:`verify_out_features_out_indices`, except that ``out_indices`` may be a tuple (stored as a list).

    Returns:
        ``(out_features, out_indices)`` as lists naming the same stages. Indices are kept as given
        (a ``-1`` stays ``-1``), as transformers does.

    Raises:
        ValueError: See :func:`verify_out_features_out_indices`; also when neither is set and there is no
            stage to select by default.
    """
    names = _stage_list(stage_names)
    indices = list(out_indices) if isinstance(out_indices, tuple) else out_indices
    verify_out_features_out_indices(out_features, indices, names)
    features = None if out_features is None else list(out_features)
    if indices is not None:
        indices = list(indices)
    if features is None and indices is None:
        if not names:
            raise ValueError("stage_names is empty: there is no last stage to select by default")
        return [names[-1]], [len(names) - 1]
    if indices is None:
        assert features is not None
        return features, [names.index(name) for name in features]
    if features is None:
        return [names[index] for index in indices], indices
    return features, indices


get_aligned_output_features_output_indices = align_out_features_out_indices
"""transformers 4.x's name of :func:`align_out_features_out_indices` (same function)."""
