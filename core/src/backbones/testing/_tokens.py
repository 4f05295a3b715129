"""Declarations of a vision transformer's token sequences, checked by :class:`~backbones.testing.TransformersParity`.

A ViT's hidden states are token sequences (prefix tokens such as a class token and registers, then the patches),
and without ``reshape_hidden_states`` its maps are sequences too. These are the values a parity declaration gives
for them, and the token count such a sequence has at an input size.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TokenShapes", "patch_token_count"]


class TokenShapes(NamedTuple):
    """The exact shapes of a ViT's hidden states and attention probabilities at one input size.

    Attributes:
        size: ``(height, width)`` of the input images.
        hidden_states: The shape of every hidden state, in order (the embeddings', then each layer's output).
        attentions: The shape of every layer's attention probabilities, in order.
    """

    size: tuple[int, int]
    hidden_states: tuple[tuple[int, ...], ...]
    attentions: tuple[tuple[int, ...], ...]


def patch_token_count(size: tuple[int, int], patch_size: int, prefix_tokens: int = 0) -> int:
    """The length of a token sequence of an image of ``size``: the prefix tokens, then one token a patch.

    A patch projection without padding drops the last rows and columns that do not fill a patch.

    Args:
        size: ``(height, width)`` of the image, in pixels.
        patch_size: The side of a square patch, in pixels.
        prefix_tokens: Tokens before the patches (class token, registers); 0 for the patches alone.

    Returns:
        ``prefix_tokens + (height // patch_size) * (width // patch_size)``.
    """
    height, width = size
    return prefix_tokens + (height // patch_size) * (width // patch_size)
