"""Public config bases of plain vision transformers (DINOv2 and the plugins built on its blocks): the fields,
the head check and the stage names every such config declares alike (:class:`PlainViTConfig`), and the fields of
ViT-style layers (:class:`ViTLayerConfig`), in one place. Imports no torch, so a config can be built and listed
without it.

Like :mod:`backbones_dinov2.blocks`, every name in ``__all__`` is part of backbones-dinov2's public API and
follows semantic versioning: within a ``0.1.x`` series no field is removed or renamed and no default changes,
so a dependent plugin pins ``backbones-dinov2>=0.1,<0.2``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from backbones import BackboneConfig
from backbones.validation import (
    ActivationName,
    check_heads_divide,
    check_rotary_heads,
    numbered_stage_names,
    square_patch,
)

__all__ = ["PlainViTConfig", "ViTLayerConfig"]


class PlainViTConfig(BackboneConfig):
    """Base of the config of a plain vision transformer: a patch stem and ``num_hidden_layers`` transformer
    layers of one width, each layer a stage.

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``. The defaults describe
    ViT-B/16 at 224 pixels; a subclass redeclares a field to change its default (or its checks), adds its own
    fields, and documents them all in its docstring (the names and meanings follow transformers' config).

    Args:
        hidden_size: Width of the tokens (the channels of every feature map).
        num_hidden_layers: Number of transformer layers (one stage each).
        num_attention_heads: Attention heads per layer; must divide ``hidden_size`` (into widths that are
            multiples of 4 when :attr:`rotary_heads`).
        hidden_act: Activation of the feed-forward network (a name of :data:`backbones.activations.ACTIVATIONS`).
        initializer_range: Standard deviation of the weight initialisation.
        image_size: Pre-training image size (one int or ``(height, width)``).
        patch_size: Side of the square patches (``p`` or ``[p, p]``; the stride of every stage).
        num_channels: Input channels.
    """

    rotary_heads: ClassVar[bool] = False
    """Whether positions enter through 2-D rotary embeddings, which need heads a multiple of 4 wide (see
    :func:`backbones.validation.check_rotary_heads`); else heads only divide ``hidden_size``."""

    hidden_size: int = Field(default=768, ge=1)
    num_hidden_layers: int = Field(default=12, ge=1)
    num_attention_heads: int = Field(default=12, ge=1)
    hidden_act: ActivationName = "gelu"
    initializer_range: float = 0.02
    image_size: int | tuple[int, int] = 224
    patch_size: Annotated[int, square_patch(16)] = Field(default=16, ge=1)
    num_channels: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _check_heads(self) -> PlainViTConfig:
        check = check_rotary_heads if self.rotary_heads else check_heads_divide
        check(self.hidden_size, self.num_attention_heads)
        return self

    @property
    def stage_names(self) -> list[str]:
        return numbered_stage_names(self.num_hidden_layers)


class ViTLayerConfig(PlainViTConfig):
    """Base of the config of a plain vision transformer whose layers are ViT's (DINOv2, Pixio, ViTPose): it adds
    to :class:`PlainViTConfig` (whose fields it keeps) the layer fields of transformers' ``ViTConfig``, which
    :meth:`backbones_dinov2.blocks.Dinov2Attention.from_config` reads.

    Args:
        hidden_dropout_prob: Dropout on the hidden states (training only); a subclass says where it applies.
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        layer_norm_eps: Epsilon of every layer norm.
        qkv_bias: Whether the query, key and value projections have a bias.
    """

    hidden_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
