"""The one place that owns `out_features` / `out_indices` semantics.

The rules are those of transformers' ``BackboneConfigMixin``: both unset selects the last stage, one set
derives the other, both set must name the same stages. Indices may be negative and are kept as given.
Every rejection is a ``ValueError`` that names the bad value and lists the valid stage names.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["align_out_features_out_indices", "positive_indices"]


def _as_list(value: object, name: str, item_type: type, stage_names: Sequence[str]) -> list | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(
            f"{name} must be a list (or tuple) of {item_type.__name__}, got {type(value).__name__} {value!r}; "
            f"valid stage names are {list(stage_names)}"
        )
    for item in items:
        # bool is an int subclass, but [True] is never a meaningful stage index.
        if not isinstance(item, item_type) or isinstance(item, bool):
            raise ValueError(
                f"{name} must contain only {item_type.__name__} values, got {item!r} in {items}; "
                f"valid stage names are {list(stage_names)}"
            )
    return items


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
        raise ValueError(
            f"out_indices {out_indices} has indices {bad} outside the {count} stages "
            f"(valid: {-count}..{count - 1}); valid stage names are {stage_names}"
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


def align_out_features_out_indices(
    out_features: Sequence[str] | None,
    out_indices: Sequence[int] | None,
    stage_names: Sequence[str],
) -> tuple[list[str], list[int]]:
    """Validate and align the requested output stages.

    Args:
        out_features: Stage names to output, or ``None``.
        out_indices: Stage indices to output (negative allowed), or ``None``.
        stage_names: All stage names of the backbone, in order.

    Returns:
        ``(out_features, out_indices)`` as lists naming the same stages. Indices are kept as given
        (a ``-1`` stays ``-1``), as transformers does.

    Raises:
        ValueError: For a value that is not a list, an unknown stage, an index out of range, a duplicate,
            stages out of order, or features and indices that disagree.
    """
    stage_names = list(stage_names)
    if not stage_names:
        raise ValueError("stage_names is empty: a backbone must declare at least one stage")
    features = _as_list(out_features, "out_features", str, stage_names)
    indices = _as_list(out_indices, "out_indices", int, stage_names)
    if features is not None:
        _check_features(features, stage_names)
    if indices is not None:
        _check_indices(indices, stage_names)

    if features is None and indices is None:
        return [stage_names[-1]], [len(stage_names) - 1]
    if indices is None:
        assert features is not None
        return features, [stage_names.index(name) for name in features]
    if features is None:
        return [stage_names[index] for index in indices], indices
    if features != [stage_names[index] for index in indices]:
        raise ValueError(
            f"out_features {features} and out_indices {indices} name different stages "
            f"(the indices select {[stage_names[index] for index in indices]}); set only one of them, "
            f"or make them agree; valid stage names are {stage_names}"
        )
    return features, indices
