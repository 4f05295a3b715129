"""Configuration of BEiT. Field names and defaults follow transformers' BeitConfig (beit-base, patch 16, 224 px)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from backbones import ConfigError, align_out_features_out_indices
from backbones.activations import ACTIVATIONS
from backbones.validation import image_pair, numbered_stage_names
from backbones_dinov2.configs import PlainViTConfig

__all__ = ["ACTIVATIONS", "BeitConfig"]

"""Supported values of ``hidden_act``."""

PYRAMID_LEVELS = 4
"""Levels of the optional feature pyramid (``add_fpn``): 4x up, 2x up, as is, 2x down."""


class BeitConfig(PlainViTConfig):
    """Configuration of a BEiT backbone; the defaults describe beit-base (patch 16, 224 px).

    The stages are ``["stem", "stage1", ..., "stageN"]`` with ``N = num_hidden_layers``: the patch
    embeddings, then the output of each transformer layer. Every stage has ``hidden_size`` channels at
    stride ``patch_size``, except the four pyramid stages when ``add_fpn`` is set.

    Args:
        hidden_size: Width of the tokens in every layer.
        num_hidden_layers: Number of transformer layers (one stage each).
        num_attention_heads: Attention heads of every layer; must divide ``hidden_size``.
        intermediate_size: Hidden width of each layer's MLP.
        hidden_act: Activation of the MLP (a name of :data:`ACTIVATIONS`).
        hidden_dropout_prob: Dropout on the embeddings and on both residual branches (training only).
        attention_probs_dropout_prob: Dropout on attention probabilities (training only).
        initializer_range: Standard deviation of the normal initialisation of linear and conv weights.
        layer_norm_eps: Epsilon of the layer norms.
        image_size: Pre-training image size (one int or ``(height, width)``); sizes the position tables,
            which are resampled for other input sizes.
        patch_size: Side of the square patches (the stride of every stage without the pyramid).
        num_channels: Input channels.
        use_mask_token: Whether the checkpoint has a mask token for masked image modelling. The backbone
            never masks, so it builds no mask token and reports the key as unused.
        use_absolute_position_embeddings: Add learned absolute position embeddings to the tokens.
        use_relative_position_bias: Give every layer its own learned relative-position attention bias.
        use_shared_relative_position_bias: Add one learned relative-position bias, shared by all layers,
            to the attention of every layer (both kinds add up when both are set, as in transformers).
        layer_scale_init_value: Initial value of the per-channel scales of both residual branches; 0
            disables layer scale (no ``lambda_1`` / ``lambda_2`` parameters).
        drop_path_rate: Stochastic-depth rate of the deepest layer; it grows linearly from 0.
        use_mean_pooling: How transformers' classifier pools (mean of patch tokens, or the CLS token). It
            does not change the backbone's maps, only which keys of a task checkpoint are unused
            (``beit.pooler.layernorm.*`` or ``beit.layernorm.*``).
        add_fpn: Pass the four ``fpn_indices`` stages through a feature pyramid (transformers'
            ``BeitBackbone`` neck): upsampled 4x, upsampled 2x, unchanged, max-pooled 2x.
        reshape_hidden_states: Return ``(batch, channels, height, width)`` maps of the patch tokens; if
            False, return each stage's ``(batch, 1 + tokens, channels)`` sequence, CLS token first.
        fpn_indices: The four stages (indices into ``stage_names``, increasing) that feed the pyramid
            levels, in level order. Not a transformers field: transformers takes them from ``out_indices``
            (which must then list exactly four), and so does this config when ``fpn_indices`` is unset.
            Once fixed, any ``out_indices`` can be selected and a stage's map does not depend on which
            other stages are selected.
    """

    model_type: ClassVar[str] = "beit"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "use_auxiliary_head",
            "auxiliary_channels",
            "auxiliary_concat_input",
            "auxiliary_loss_weight",
            "auxiliary_num_convs",
            "pool_scales",
            "semantic_loss_ignore_index",
            "vocab_size",
        }
    )
    """Keys of transformers' config.json without effect here: its segmentation head's and masked-image-modelling fields."""

    intermediate_size: int = Field(default=3072, ge=1)
    hidden_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(default=0.0, ge=0, lt=1)
    layer_norm_eps: float = Field(default=1e-12, gt=0)
    use_mask_token: bool = False
    use_absolute_position_embeddings: bool = False
    use_relative_position_bias: bool = False
    use_shared_relative_position_bias: bool = False
    layer_scale_init_value: float = Field(default=0.1, ge=0)
    drop_path_rate: float = Field(default=0.1, ge=0, lt=1)
    use_mean_pooling: bool = True
    add_fpn: bool = False
    reshape_hidden_states: bool = True
    fpn_indices: list[int] | None = None

    def __init__(self, /, **data: Any) -> None:
        selection_keys = ("out_indices", "_out_indices", "out_features", "_out_features")
        legacy = data.pop("segmentation_indices", None)
        if legacy is not None and all(data.get(key) is None for key in selection_keys):
            # The name older BEiT segmentation configs used for out_indices; transformers maps it too.
            data["out_indices"] = legacy
        if data.get("add_fpn") is True and data.get("fpn_indices") is None:
            data["fpn_indices"] = _pyramid_stages_from_selection(data)
        super().__init__(**data)

    @model_validator(mode="after")
    def _check_architecture(self) -> BeitConfig:
        height, width = image_pair(self.image_size)
        if min(height, width) < self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is smaller than patch_size={self.patch_size}; the pre-training "
                "image must hold at least one patch in each direction"
            )
        if self.fpn_indices is not None:
            self._check_fpn_indices(self.fpn_indices)
        if self.add_fpn:
            if self.fpn_indices is None:
                raise ValueError(
                    "add_fpn=True needs the four stages that feed the pyramid: set fpn_indices (e.g. [3, 5, 7, 11] "
                    "for 12 layers), or build the config with four out_indices, as transformers requires"
                )
            if not self.reshape_hidden_states:
                raise ValueError(
                    "add_fpn=True needs reshape_hidden_states=True: the pyramid works on 2-D feature maps; "
                    "set reshape_hidden_states=True or add_fpn=False"
                )
        return self

    def _check_fpn_indices(self, indices: list[int]) -> None:
        names = self.stage_names
        count = len(names)
        if len(indices) != PYRAMID_LEVELS:
            raise ValueError(
                f"fpn_indices must list {PYRAMID_LEVELS} stages (one per pyramid level), got {indices}; "
                f"valid stage names are {names}"
            )
        if any(not -count <= index < count for index in indices):
            raise ValueError(
                f"fpn_indices {indices} has indices outside the {count} stages (valid: {-count}..{count - 1}); "
                f"valid stage names are {names}"
            )
        positions = [index % count for index in indices]
        if len(set(positions)) != len(positions):
            raise ValueError(
                f"fpn_indices {indices} names a stage twice (as positions {positions}); give four different "
                f"stages; valid stage names are {names}"
            )
        if positions != sorted(positions):
            raise ValueError(
                f"fpn_indices {indices} must go from shallow to deep (the first feeds the finest level): use "
                f"{sorted(positions)}; valid stage names are {names}"
            )

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patches per column and per row of the pre-training image (the size of the position tables)."""
        height, width = image_pair(self.image_size)
        return height // self.patch_size, width // self.patch_size

    @property
    def fpn_positions(self) -> list[int]:
        """``fpn_indices`` as non-negative stage positions; empty without ``add_fpn``."""
        if not self.add_fpn or self.fpn_indices is None:
            return []
        return [index % len(self.stage_names) for index in self.fpn_indices]

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if data.get("fpn_indices") is None:
            # Unset: leave config.json exactly as transformers writes it.
            data.pop("fpn_indices", None)
        return data


def _pyramid_stages_from_selection(data: dict[str, Any]) -> list[int] | None:
    """transformers' rule for ``add_fpn``: the four selected stages are the pyramid's inputs."""
    layers = data.get("num_hidden_layers", 12)
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        return None  # the field's own validation reports it
    out_features = data.get("out_features", data.get("_out_features"))
    out_indices = data.get("out_indices", data.get("_out_indices"))
    features, indices = align_out_features_out_indices(out_features, out_indices, numbered_stage_names(layers))
    if len(indices) != PYRAMID_LEVELS:
        raise ConfigError(
            f"invalid BeitConfig: add_fpn=True feeds a {PYRAMID_LEVELS}-level pyramid from {PYRAMID_LEVELS} stages, "
            f"but the selection has {len(indices)} ({features}) and fpn_indices is not set; pass four out_indices "
            "(transformers' rule, e.g. [3, 5, 7, 11] for 12 layers) or set fpn_indices to the four pyramid stages"
        )
    return list(indices)
