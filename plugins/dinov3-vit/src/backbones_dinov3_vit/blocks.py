"""Public building blocks of DINOv3's vision transformer: 2-D rotary position embeddings of a patch grid (with
DINOv3's train-time coordinate augmentations), the rotation they apply to queries and keys, and the base of a
backbone whose layers take them (:class:`RotaryViTBackbone`), for plugins whose models use the same positions
(Sapiens2, ...).

Paper: Siméoni et al., "DINOv3" (2025), https://arxiv.org/abs/2508.10104.

Every name in ``__all__`` is part of backbones-dinov3-vit's public API and follows the versioning rule of
docs/plugins.md ("Building on another plugin's blocks"): a dependent plugin pins ``backbones-dinov3-vit>=0.1,<0.2``.
They are the very modules DINOv3 ViT runs (no second implementation): :class:`RotaryPositions` only types its
constructor against :class:`RotaryConfig`, the fields it reads, so that another architecture's config can be passed.

Layout: tokens are ``(batch, heads, prefix + height * width, head_width)``, the prefix tokens (class, registers)
first, then the patches row by row. The prefix tokens get angle 0, so :func:`rotate` leaves them unchanged.
"""

from __future__ import annotations

from typing import Protocol

from ._model import RotaryViTBackbone, Rotation, _RotaryPositions, _rotate

__all__ = ["RotaryConfig", "RotaryPositions", "RotaryViTBackbone", "Rotation", "rotate"]


class RotaryConfig(Protocol):
    """The config fields :class:`RotaryPositions` reads (a :class:`~backbones_dinov3_vit.Dinov3ViTConfig` has them).

    Attributes:
        hidden_size: Token width; with ``num_attention_heads`` it gives the head width, a multiple of 4.
        num_attention_heads: Attention heads.
        rope_theta: Base period of the rotary frequencies.
        pos_embed_shift: Train-time shift of the coordinates, a uniform draw in ``[-shift, shift]`` per axis
            (``None``: off).
        pos_embed_jitter: Train-time scale per axis, a log-uniform draw in ``[1/jitter, jitter]`` (``None``: off).
        pos_embed_rescale: Train-time scale of both axes, one log-uniform draw in ``[1/rescale, rescale]``
            (``None``: off).
    """

    hidden_size: int
    num_attention_heads: int
    rope_theta: float
    pos_embed_shift: float | None
    pos_embed_jitter: float | None
    pos_embed_rescale: float | None

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches (class and register tokens), which are not rotated."""
        ...


class RotaryPositions(_RotaryPositions):
    """Cosines and sines of the 2-D rotary angles of a patch grid (no parameters, no buffers).

    Each head's channels form ``head_width / 2`` rotation pairs ``(i, i + head_width / 2)``: the first quarter
    of the frequencies turns with the vertical coordinate of the patch centre, the second with the horizontal
    one, both normalised to ``[-1, 1]``. Frequencies are ``rope_theta ** -(4k / head_width)`` and an angle is
    ``2 pi * coordinate * frequency``, computed in float32 on every call. In training mode the coordinates are
    shifted, jittered and rescaled as the config says (one draw per forward from torch's global generator, so
    ``torch.manual_seed`` makes it reproducible); in evaluation mode never.

    Call it as ``rope(height, width, device, dtype)`` (the patch grid's rows and columns) to get the
    :data:`Rotation` of ``num_prefix_tokens + height * width`` tokens, each ``(tokens, head_width)`` in ``dtype``.

    Args:
        config: The fields of :class:`RotaryConfig`.
    """

    def __init__(self, config: RotaryConfig) -> None:
        super().__init__(config)  # type: ignore[arg-type]  # reads only RotaryConfig's fields


rotate = _rotate
"""``rotate(x, rotation)``: rotate each channel pair ``(i, i + head_width / 2)`` of ``x``
(``(..., tokens, head_width)``) by its angle in ``rotation`` (a :data:`Rotation` from :class:`RotaryPositions`)."""
