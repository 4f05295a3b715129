"""MaskFormer's Swin Transformer backbone.

Paper: Cheng et al., "Per-Pixel Classification is Not All You Need for Semantic Segmentation" (MaskFormer,
2021), https://arxiv.org/abs/2107.06278; the backbone is Swin (Liu et al., 2021,
https://arxiv.org/abs/2103.14030).

The blocks, windows, padding and patch merging are Swin's, taken from backbones-swin: every stage pads
its map to whole windows (the window never shrinks, the shift never stops), as transformers'
``MaskFormerSwinLayer`` does. What differs is the backbone around them, as in transformers'
``MaskFormerSwinBackbone``:

* the trunk lives under ``model.`` (``model.embeddings``, ``model.encoder.layers.N``);
* every stage has an output LayerNorm, ``hidden_states_norms.<i>`` for stage ``i + 1``, whatever the
  selection (transformers' SwinBackbone keeps norms of the selected stages only, keyed by name);
* each window's ``relative_position_index`` is saved with the weights;
* the attention branch's output dropout is ``attention_probs_dropout_prob`` (training only).
"""

from __future__ import annotations

from torch import Tensor, nn

from backbones_swin import SwinBackbone
from backbones_swin._model import _Embeddings, _Encoder, _SwinBlock, _SwinStage, _Trunk, _WindowSelfAttention

from ._config import MaskFormerSwinConfig

__all__ = ["MaskFormerSwinBackbone"]


class _MaskFormerSwinBlock(_SwinBlock):
    """A Swin block whose attention-output dropout is ``attention_probs_dropout_prob``, as in transformers."""

    def _attention_output_dropout(self, config: MaskFormerSwinConfig) -> float:  # type: ignore[override]
        return config.attention_probs_dropout_prob


class _MaskFormerSwinStage(_SwinStage):
    block_class = _MaskFormerSwinBlock


class MaskFormerSwinBackbone(SwinBackbone):
    """MaskFormer's Swin feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the patch embeddings) and ``stage1..stageK``; a stage's feature map is its output
    before patch merging, passed through that stage's LayerNorm (``hidden_states_norms.<K - 1>``), as in
    transformers' ``MaskFormerSwinBackbone``. Unlike there, ``"stem"`` may be selected: its map is the
    patch embeddings, with no norm (checkpoints have none for it). ``hidden_states`` are the stem and every
    stage output before those norms, as ``(B, H * W, C)`` token sequences; ``attentions`` hold the last
    block's attention probabilities of each stage.

    Args:
        config: The architecture and the output selection.

    Example:
        >>> model = MaskFormerSwinBackbone(MaskFormerSwinConfig(out_indices=[1, 2, 3, 4])).eval()  # doctest: +SKIP
        >>> [fmap.shape[1] for fmap in model(torch.randn(1, 3, 224, 224)).feature_maps]  # doctest: +SKIP
        [96, 192, 384, 768]
    """

    config_class = MaskFormerSwinConfig
    base_model_prefix = "model"  # trunk prefix in MaskFormerSwinBackbone checkpoints; absent in MaskFormerSwinModel's
    ignored_checkpoint_keys = ()  # relative_position_index is a weight of this model
    reference_class_name = "MaskFormerSwinBackbone"
    stage_class = _MaskFormerSwinStage

    config: MaskFormerSwinConfig

    def __init__(self, config: MaskFormerSwinConfig) -> None:
        super().__init__(config)
        # transformers saves each window's relative-position index; so do we, so that files written here
        # load into transformers' MaskFormerSwinBackbone without missing keys.
        for module in self.modules():
            if isinstance(module, _WindowSelfAttention):
                module.register_buffer("relative_position_index", module.relative_position_index, persistent=True)

    def _add_trunk(self, config: MaskFormerSwinConfig, stages: list[_SwinStage]) -> None:  # type: ignore[override]
        self.model = _Trunk(config, stages)

    def _embeddings(self) -> _Embeddings:
        return self.model.embeddings

    def _encoder(self) -> _Encoder:
        return self.model.encoder

    def _add_output_norms(self) -> None:
        """One LayerNorm per stage after the stem, selected or not, in stage order (``hidden_states_norms.<i>``)."""
        self.hidden_states_norms = nn.ModuleList(nn.LayerNorm(channels) for channels in self.num_features[1:])

    def _on_out_features_changed(self) -> None:
        """Nothing to follow: every stage already has its norm."""

    def _stage_map(self, position: int, x: Tensor) -> Tensor:
        if position:
            x = self.hidden_states_norms[position - 1](x)
        return x.permute(0, 3, 1, 2)

    def _hidden_state(self, x: Tensor) -> Tensor:
        return x.flatten(1, 2)

    def _prune_stages(self, last_stage: int) -> None:
        super()._prune_stages(last_stage)
        del self.hidden_states_norms[last_stage:]
