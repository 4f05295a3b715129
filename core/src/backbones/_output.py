"""`BackboneOutput`: what a backbone's forward returns.

It behaves like transformers' output: by attribute (``out.feature_maps``), by key
(``out["feature_maps"]``), and as a tuple of the fields that are set (``out[0]``, ``fmaps, = out``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["BackboneOutput"]


@dataclass
class BackboneOutput:
    """Output of a backbone.

    Attributes:
        feature_maps: One ``(batch, channels, height, width)`` tensor per requested stage, in stage order.
        hidden_states: Per-stage hidden states when requested, else ``None``.
        attentions: Per-layer attention weights when requested and supported, else ``None``.
        prefix_tokens: With ``output_prefix_tokens=True`` (backbones with a class or register tokens), one
            ``(batch, num_prefix_tokens, channels)`` tensor per requested stage, aligned with
            ``feature_maps``: the class token first, then the registers, normalised as the maps are;
            else ``None``. Not in transformers: it comes last, so the other fields keep their positions.
    """

    feature_maps: tuple[Tensor, ...]
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    prefix_tokens: tuple[Tensor, ...] | None = None

    def keys(self) -> list[str]:
        """Names of the fields that are set, in order."""
        return [field.name for field in fields(self) if getattr(self, field.name) is not None]

    def values(self) -> list[Any]:
        """Values of the fields that are set, in order."""
        return [getattr(self, key) for key in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs of the fields that are set."""
        return [(key, getattr(self, key)) for key in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are set, as a tuple (what ``return_dict=False`` returns)."""
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r} is not set in this output; set fields are {self.keys()}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()
