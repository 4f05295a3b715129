"""MaskFormer's Swin Transformer backbone.

Paper: Cheng et al., "Per-Pixel Classification is Not All You Need for Semantic Segmentation" (MaskFormer,
2021), https://arxiv.org/abs/2107.06278; the backbone is Swin (Liu et al., 2021,
https://arxiv.org/abs/2103.14030).

The blocks, windows, padding and patch merging are Swin's public blocks (:mod:`backbones_swin.blocks`): every stage pads
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

from typing import Any, cast

from torch import Tensor, nn

from backbones_swin import SwinBackbone

from ._config import MaskFormerSwinConfig

__all__ = ["MaskFormerSwinBackbone"]


class MaskFormerSwinBackbone(SwinBackbone):
    """MaskFormer's Swin feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the patch embeddings) and ``stage1..stageK``; a stage's feature map is its output
    before patch merging, passed through that stage's LayerNorm (``hidden_states_norms.<K - 1>``), as in
    transformers' ``MaskFormerSwinBackbone``. As there, ``"stem"`` cannot be selected (a ``ValueError`` at
    construction or on assignment): the stem's tokens are the first hidden state. ``hidden_states`` are nested as
    transformers nests them: first the stem's ``(B, H * W, C)`` tokens, then per stage every block's input
    and output in order (``2 * depth`` entries, each ``(B, H * W, C)``, before patch merging and the output
    norm), stacked into one ``(2 * depth, B, H * W, C)`` tensor per stage: ``for tokens in
    hidden_states[i]`` and ``hidden_states[i][-1]`` (the stage output) work as on transformers' tuples.
    ``attentions`` hold the last block's attention probabilities of each stage. With the default (swin-tiny)
    config, ``stage1..stage4`` are 96, 192, 384 and 768 channels wide.
    """

    config_class = MaskFormerSwinConfig
    lora_target_modules = ("query", "key", "value", "output.dense", "intermediate.dense")
    base_model_prefix = "model"  # trunk prefix in MaskFormerSwinBackbone checkpoints; absent in MaskFormerSwinModel's
    ignored_checkpoint_keys = ()  # relative_position_index is a weight of this model
    per_block_hidden_states = True
    trunk_name = "model"
    first_selectable_stage = 1  # transformers' MaskFormerSwinBackbone refuses "stem"

    config: MaskFormerSwinConfig

    def _block_options(self) -> dict[str, Any]:
        """Swin's, plus an attention-output dropout of ``attention_probs_dropout_prob`` and a saved
        ``relative_position_index`` (transformers saves it: files written here then load into transformers'
        MaskFormerSwinBackbone without missing keys)."""
        return {
            **super()._block_options(),
            "attention_output_dropout": self.config.attention_probs_dropout_prob,
            "save_position_index": True,
        }

    def _add_output_norms(self) -> None:
        """One LayerNorm per stage after the stem, selected or not, in stage order (``hidden_states_norms.<i>``)."""
        self.hidden_states_norms = nn.ModuleList(nn.LayerNorm(channels) for channels in self.num_features[1:])

    def _on_out_features_changed(self) -> None:
        """Nothing to follow: every stage already has its norm."""

    def _stage_map(self, position: int, x: Tensor) -> Tensor:
        if position:
            x = cast("nn.ModuleList", self.hidden_states_norms)[position - 1](x)
        return x.permute(0, 3, 1, 2)

    def _hidden_state(self, x: Tensor) -> Tensor:
        return x.flatten(1, 2)

    def _prune_stages(self, last_stage: int) -> None:
        super()._prune_stages(last_stage)
        del cast("nn.ModuleList", self.hidden_states_norms)[last_stage:]
