"""Config rules several architectures share, in one place (pydantic validators of plugins call them)."""

from __future__ import annotations

from typing import Any

__all__ = ["square_patch_size"]


def square_patch_size(value: Any, example: int) -> Any:
    """Normalise a ``patch_size`` given as ``p`` or ``[p, p]`` (transformers accepts both) to ``p``.

    A stage's stride is one number, so only square patches are meaningful. Anything that is not a list or
    tuple is returned unchanged, for the field's own type check.

    Args:
        value: The raw ``patch_size``.
        example: The architecture's usual patch size, shown in the error message.

    Raises:
        ValueError: For a pair that is not square, or a list that is not a pair.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(
                f"patch_size must be one int or a square pair such as [{example}, {example}], got {list(value)}"
            )
        return value[0]
    return value
