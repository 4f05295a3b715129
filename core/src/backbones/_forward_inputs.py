"""`ForwardInput`: the declaration of a forward input a backbone takes beyond ``pixel_values``; and
`ForwardRequest`: what :meth:`backbones.Backbone.forward` asks of a plugin's ``_forward_features``.

Some architectures take more than images: ViTPose's mixture-of-experts MLP picks its expert per sample from
a ``dataset_index``. A backbone declares such inputs in :attr:`backbones.Backbone.extra_forward_inputs`, so
that generic tools (the conformance kit's compile, export, ONNX, distributed and precision checks, and
``forward_with_filtered_kwargs``) know them and can build example values without knowing the architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import torch

    from ._config import BackboneConfig

__all__ = ["ForwardInput", "ForwardRequest"]


class ForwardRequest(TypedDict):
    """The keyword arguments :meth:`backbones.Backbone.forward` passes to a plugin's ``_forward_features``.

    A plugin spells them as keyword-only parameters, ``_forward_features(self, pixel_values, *, last_stage,
    output_hidden_states, output_attentions)``, or takes them whole, ``**request: Unpack[ForwardRequest]``, to
    hand them on (as :class:`backbones.necks.FeaturePyramid` does to the backbone it wraps). A plugin with prefix
    tokens also takes ``output_prefix_tokens: bool = False`` (passed only when requested).
    """

    last_stage: int
    """Position of the deepest stage to compute: the deepest selected one, or the last kept stage when hidden
    states or attentions are requested."""
    output_hidden_states: bool
    """Whether to return every computed stage's hidden state."""
    output_attentions: bool
    """Whether to return attention weights (only ever true for a backbone with ``has_attentions``)."""


@dataclass(frozen=True)
class ForwardInput:
    """One keyword argument of a backbone's ``forward`` beyond ``pixel_values``, batch-first.

    The input is a tensor of shape ``(batch, *shape)`` (item ``i`` belongs to image ``i``), passed to
    ``forward`` by keyword. Example values come from ``examples`` (item ``i`` of a batch is filled with
    ``examples[i % len(examples)]``) or, where valid values depend on the config, from ``builder``.

    Args:
        name: The keyword of ``forward`` (e.g. ``"dataset_index"``).
        dtype: Name of its torch dtype (``"int64"``, ``"float32"``, ...): a string, so declaring needs no torch.
        shape: Shape of one batch item (``()``: one value per image).
        examples: Valid values, cycled over the batch; different values for neighbouring items let a
            check see whether items are mixed up.
        builder: ``builder(config, batch_size)`` returns a valid ``(batch_size, *shape)`` tensor; used
            instead of ``examples`` when given.
        required: Whether ``forward`` refuses to run without it: a bool, or ``required(config)`` where it
            depends on the config (ViTPose needs ``dataset_index`` only with more than one expert). A
            backbone raises a ``ValueError`` naming the input when a required one is missing.
        description: One line for documentation and error messages.
    """

    name: str
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    examples: tuple[float, ...] = ()
    # The config is the plugin's own config class: typed Any so that a builder may take that subclass.
    builder: Callable[[Any, int], torch.Tensor] | None = None
    required: bool | Callable[[Any], bool] = True
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"ForwardInput name must be a Python identifier (a keyword of forward), got {self.name!r}")
        if not self.examples and self.builder is None:
            raise ValueError(f"ForwardInput {self.name!r} needs example values: give examples=(...) or builder=...")

    def is_required(self, config: BackboneConfig) -> bool:
        """Whether a backbone with ``config`` refuses to run without this input."""
        return self.required(config) if callable(self.required) else bool(self.required)

    def example(self, config: BackboneConfig, batch_size: int, device: Any = None) -> torch.Tensor:
        """A valid ``(batch_size, *shape)`` value for a backbone with ``config``.

        Raises:
            ValueError: If ``dtype`` is not a torch dtype or ``builder`` returns another shape.
        """
        import torch

        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"ForwardInput {self.name!r}: dtype {self.dtype!r} is not a torch dtype name")
        if self.builder is not None:
            value = self.builder(config, batch_size).to(dtype)
        else:
            items = [self.examples[index % len(self.examples)] for index in range(batch_size)]
            value = torch.tensor(items, dtype=dtype).reshape(batch_size, *([1] * len(self.shape)))
            value = value.expand(batch_size, *self.shape).contiguous()
        expected = (batch_size, *self.shape)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"ForwardInput {self.name!r}: builder returned shape {tuple(value.shape)}, expected {expected}"
            )
        return value.to(device) if device is not None else value
