"""Config rules several architectures share, in one place (pydantic validators of plugins call them)."""

from __future__ import annotations

from typing import Any

__all__ = ["check_heads_divide", "check_stage_heads", "square_patch_size"]


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


def check_heads_divide(hidden_size: int, num_attention_heads: int) -> None:
    """Require ``num_attention_heads`` to divide ``hidden_size`` (every head gets an equal slice).

    Raises:
        ValueError: Naming both values and the fix.
    """
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} does not divide hidden_size={hidden_size}; "
            "choose a head count that divides hidden_size"
        )


def check_stage_heads(embed_dim: int, depths: list[int], num_heads: list[int]) -> None:
    """Require one head count per stage of a hierarchical transformer whose stage ``i`` is
    ``embed_dim * 2**i`` wide, each a positive divisor of its stage's width.

    Raises:
        ValueError: Naming the stage, its width and the fix.
    """
    if len(num_heads) != len(depths):
        raise ValueError(
            f"num_heads has {len(num_heads)} entries but depths has {len(depths)}; "
            "give num_heads one head count per stage"
        )
    for index, heads in enumerate(num_heads):
        width = embed_dim * 2**index
        if heads < 1 or width % heads:
            raise ValueError(
                f"num_heads[{index}]={heads} must be a positive divisor of stage {index + 1}'s width "
                f"embed_dim * 2**{index} = {width}; change num_heads or embed_dim"
            )
