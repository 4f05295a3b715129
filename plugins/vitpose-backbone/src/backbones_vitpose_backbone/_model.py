"""ViTPose backbone: a plain vision transformer whose MLP can be a mixture of experts chosen per image.

Paper: Xu et al., "ViTPose: Simple Vision Transformer Baselines for Human Pose Estimation" (NeurIPS 2022),
https://arxiv.org/abs/2204.12484; the experts are ViTPose+'s (https://arxiv.org/abs/2212.04246).

Built on the public blocks of backbones-dinov2 (:mod:`backbones_dinov2.blocks`): its attention (same keys,
``attention.attention.query`` ... ``attention.output.dense``), its two-layer MLP and its token-to-map helper.
What is ViTPose's own:

* the stem: a patch projection padded by 2 pixels on each side, and position embeddings without a class token
  (the table's first row, a class token's position in ViT, is added to every patch);
* the layer: ``layernorm_before`` / ``layernorm_after`` around attention and MLP, no layer scale;
* the mixture-of-experts MLP (``num_experts > 1``): a shared ``fc2`` makes the first
  ``hidden_size - part_features`` output channels, and the expert of each image (its ``dataset_index``, i.e.
  the dataset the pose head was trained on) the last ``part_features``. Each image runs only its own expert
  (one batched matrix product over the gathered expert weights), where transformers runs every expert on every
  image and masks.

Layout: tokens are ``(batch, height * width, channels)``. A feature map is the stage's tokens through the final
layer norm as a ``(batch, channels, height, width)`` view (transformers returns the token sequence; its pose
model reshapes it exactly so). ``hidden_states`` are the raw token sequences, as transformers'.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import BackboneOutput, ForwardInput, InputError
from backbones.activations import make_activation
from backbones.layers import CheckpointableLayer, check_pixel_channels, init_linear_and_norm_, linear
from backbones_dinov2.blocks import Dinov2Attention, Dinov2Encoder, Mlp, PlainViTBackbone

from ._config import PATCH_PADDING, VitPoseBackboneConfig

__all__ = ["VitPoseBackbone"]


class _PatchEmbeddings(nn.Module):
    """The padded patch projection (key ``projection``)."""

    def __init__(self, config: VitPoseBackboneConfig) -> None:
        super().__init__()
        patch = config.patch_size
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=patch, stride=patch, padding=PATCH_PADDING
        )


class VitPoseEmbeddings(nn.Module):
    """Stem (keys ``patch_embeddings.projection``, ``position_embeddings``): patches plus positions.

    The position table is ``(1, 1 + rows * columns, channels)`` for the trained grid; its first row is added to
    every patch. For another grid the patch rows of the table are resampled bicubically (float32, by target
    size, no antialiasing), which transformers does not do (it accepts the trained size only).
    """

    def __init__(self, config: VitPoseBackboneConfig) -> None:
        super().__init__()
        self.grid = config.position_grid
        # The padded projection needs patch_size - 4 pixels for one patch.
        self.smallest_side = config.patch_size - 2 * PATCH_PADDING
        rows, columns = self.grid
        self.patch_embeddings = _PatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, rows * columns + 1, config.hidden_size))
        self.dropout = config.hidden_dropout_prob

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, int, int]:
        """Returns the tokens ``(batch, height * width, channels)`` and the patch grid's height and width."""
        projection = self.patch_embeddings.projection
        check_pixel_channels(pixel_values, projection.in_channels, "ViTPose backbone")
        height, width = pixel_values.shape[-2:]
        smallest = self.smallest_side
        # Sizes may be symbolic while compiling or exporting: comparing them there would pin the graph's size.
        if not torch.compiler.is_compiling() and (height < smallest or width < smallest):
            raise InputError(
                f"pixel_values is {height}x{width} pixels, too small for one patch: this ViTPose backbone needs "
                f"{smallest}x{smallest} at least (patch_size={projection.kernel_size[0]} less its 2-pixel padding "
                "on each side)"
            )
        patches = projection(pixel_values.to(projection.weight.dtype))
        _, _, height, width = patches.shape
        table = self.position_embeddings
        tokens = patches.flatten(2).transpose(1, 2) + self._patch_positions(height, width) + table[:, :1]
        return F.dropout(tokens, self.dropout, self.training), height, width

    def _patch_positions(self, height: int, width: int) -> Tensor:
        """Position embeddings of a ``height x width`` patch grid, ``(1, height * width, channels)``."""
        table = self.position_embeddings[:, 1:]
        rows, columns = self.grid
        # Bicubic resampling to the table's own size is the identity, so skipping it at the trained grid changes
        # no value; while compiling or exporting the sizes may be symbolic, and comparing them would pin the
        # graph to one size, so there the table is always resampled.
        if not torch.compiler.is_compiling() and (height, width) == (rows, columns):
            return table
        channels = table.shape[-1]
        grid = table.reshape(1, rows, columns, channels).permute(0, 3, 1, 2)
        resized = F.interpolate(grid.float(), size=(height, width), mode="bicubic", align_corners=False)
        return resized.to(table.dtype).permute(0, 2, 3, 1).reshape(1, height * width, channels)


class VitPoseMoeMlp(nn.Module):
    """The mixture-of-experts MLP (keys ``fc1``, ``fc2``, ``experts.<i>``): ``fc1`` and the activation are
    shared; ``fc2`` makes the first ``hidden_size - part_features`` channels and each image's expert the last
    ``part_features``.

    Args:
        config: Its ``hidden_size``, ``mlp_ratio``, ``hidden_act``, ``num_experts`` and ``part_features``.
    """

    def __init__(self, config: VitPoseBackboneConfig) -> None:
        super().__init__()
        width, hidden = config.hidden_size, config.hidden_size * config.mlp_ratio
        self.fc1 = nn.Linear(width, hidden)
        self.activation = make_activation(config.hidden_act)
        self.fc2 = nn.Linear(hidden, width - config.part_features)
        self.experts = nn.ModuleList(nn.Linear(hidden, config.part_features) for _ in range(config.num_experts))

    def forward(self, x: Tensor, dataset_index: Tensor) -> Tensor:
        """``(B, N, C)`` tokens and ``(B,)`` expert indices to ``(B, N, C)``."""
        hidden = linear(x, self.fc1, self.activation)
        experts = [cast(nn.Linear, expert) for expert in self.experts]
        weight = torch.stack([expert.weight for expert in experts])[dataset_index]  # (B, part, hidden)
        bias = torch.stack([expert.bias for expert in experts])[dataset_index]  # (B, part)
        parts = torch.baddbmm(bias.unsqueeze(1).to(hidden.dtype), hidden, weight.transpose(1, 2).to(hidden.dtype))
        return torch.cat((linear(hidden, self.fc2), parts), dim=-1)


class VitPoseLayer(CheckpointableLayer):
    """One pre-norm transformer layer (keys ``layernorm_before``, ``attention``, ``layernorm_after``, ``mlp``).
    The unit of gradient checkpointing and of FSDP sharding."""

    def __init__(self, config: VitPoseBackboneConfig) -> None:
        super().__init__()
        width = config.hidden_size
        self.layernorm_before = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = Dinov2Attention.from_config(config)
        self.layernorm_after = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp: nn.Module = (
            VitPoseMoeMlp(config) if config.num_experts > 1 else Mlp(width, width * config.mlp_ratio, config.hidden_act)
        )
        self.mixture = config.num_experts > 1
        self.dropout = config.hidden_dropout_prob

    def forward(self, x: Tensor, dataset_index: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        """``(B, N, C)`` to ``(B, N, C)``; also the attention probabilities if ``need_weights``."""
        context, weights = self.attention(self.layernorm_before(x), need_weights)
        x = x + F.dropout(context, self.dropout, self.training)
        normed = self.layernorm_after(x)
        return x + (self.mlp(normed, dataset_index) if self.mixture else self.mlp(normed)), weights


def _example_dataset_index(config: VitPoseBackboneConfig, batch_size: int) -> Tensor:
    """Image ``i`` uses expert ``i mod num_experts``: neighbouring images differ where there are experts."""
    return torch.arange(batch_size) % config.num_experts


class VitPoseBackbone(PlainViTBackbone):
    """ViTPose feature extractor with transformers-compatible checkpoints.

    Stages are ``stem`` (the embeddings) and ``stage1..stageN`` (the transformer layers), all of stride
    ``patch_size``. A feature map is the stage's tokens through the final ``layernorm`` as ``(batch,
    hidden_size, height // patch_size, width // patch_size)``. ``hidden_states`` are the raw token sequences of
    every stage; ``attentions`` hold each run layer's attention probabilities.

    With ``num_experts > 1``, ``forward`` needs ``dataset_index``: one expert index in ``[0, num_experts - 1]``
    per image (the released ViTPose+ checkpoints: 0 is COCO). It is declared in ``extra_forward_inputs``, so
    ``forward_with_filtered_kwargs`` (as transformers' ``VitPoseForPoseEstimation`` calls it) keeps it.
    """

    config_class: ClassVar[type[VitPoseBackboneConfig]] = VitPoseBackboneConfig
    config: VitPoseBackboneConfig
    # Not the experts: their weights are gathered per image, never called as modules, so a LoRA wrapper on
    # them would never run.
    lora_target_modules = ("query", "key", "value", "output.dense", "fc1", "fc2")
    extra_forward_inputs = (
        ForwardInput(
            "dataset_index",
            dtype="int64",
            builder=_example_dataset_index,
            required=lambda config: bool(config.num_experts > 1),
            description="expert (training dataset) of each image, in [0, num_experts - 1]",
        ),
    )

    def __init__(self, config: VitPoseBackboneConfig) -> None:
        super().__init__(config)
        self.embeddings = VitPoseEmbeddings(config)
        self.encoder = Dinov2Encoder(VitPoseLayer(config) for _ in range(config.num_hidden_layers))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self._set_plain_stages(config)  # no class token: the maps are all the tokens
        self._dataset_index: Tensor | None = None
        self.post_init()

    @property
    def minimum_input_size(self) -> int:
        """``patch_size - 4``: the padded patch projection makes one patch from that many pixels."""
        return self.embeddings.smallest_side

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as transformers' ``VitPoseBackbonePreTrainedModel`` does."""
        std = self.config.initializer_range
        if init_linear_and_norm_(module, std, truncated=True):
            return
        if isinstance(module, VitPoseEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)

    def forward(  # type: ignore[override]  # dataset_index is second, as in transformers
        self,
        pixel_values: Tensor,
        dataset_index: Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        output_prefix_tokens: bool | None = None,
    ) -> BackboneOutput | tuple[Any, ...]:
        """Compute the feature maps of the requested stages (see :meth:`backbones.Backbone.forward`).

        Args:
            pixel_values: ``(batch, channels, height, width)`` images.
            dataset_index: ``(batch,)`` integer expert index per image; required when ``num_experts > 1``
                (ignored otherwise, as in transformers).
            output_hidden_states: Also return every stage's tokens.
            output_attentions: Also return every layer's attention probabilities.
            return_dict: Return a :class:`~backbones.BackboneOutput` or a plain tuple.
            output_prefix_tokens: Refused: ViTPose has no class token.

        Raises:
            InputError: (a ``ValueError``) If ``dataset_index`` is needed and missing, not one integer per image, or (in eager
                mode) outside ``[0, num_experts - 1]``.
        """
        self._dataset_index = self._checked_dataset_index(dataset_index, pixel_values)
        try:
            return super().forward(
                pixel_values,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
                return_dict=return_dict,
                output_prefix_tokens=output_prefix_tokens,
            )
        finally:
            self._dataset_index = None

    def _checked_dataset_index(self, dataset_index: Tensor | None, pixel_values: Tensor) -> Tensor | None:
        experts = self.config.num_experts
        # Malformed pixels are refused first, by Backbone.forward (with the error that names them).
        if experts == 1 or pixel_values.dim() != 4 or pixel_values.shape[0] == 0:
            return None
        valid = f"[0, {experts - 1}] (config.num_experts={experts})"
        if dataset_index is None:
            raise InputError(
                f"dataset_index is required: this ViTPose backbone has {experts} experts, so pass one expert index "
                f"per image, a (batch,) integer tensor with values in {valid}"
            )
        if not isinstance(dataset_index, Tensor) or dataset_index.is_floating_point() or dataset_index.is_complex():
            kind = dataset_index.dtype if isinstance(dataset_index, Tensor) else type(dataset_index).__name__
            raise InputError(f"dataset_index must be an integer tensor with values in {valid}, got {kind}")
        if dataset_index.numel() != pixel_values.shape[0]:
            raise InputError(
                f"dataset_index must hold one expert index per image: got shape {tuple(dataset_index.shape)} for a "
                f"batch of {pixel_values.shape[0]}"
            )
        # Checking values reads them, which a compiled or exported graph cannot do without a host sync (nor a
        # shape check on the meta device at all).
        readable = not torch.compiler.is_compiling() and dataset_index.device.type != "meta"
        if readable and ((dataset_index < 0) | (dataset_index >= experts)).any():
            bad = sorted({int(value) for value in dataset_index.flatten().tolist() if not 0 <= value < experts})
            raise InputError(f"dataset_index holds {bad}, outside the valid range {valid}")
        return dataset_index.reshape(-1).long()

    def _layer_inputs(self, tokens: Tensor, height: int, width: int) -> tuple[Any, ...]:
        """Every layer takes the images' expert indices (``None`` without experts)."""
        return (self._dataset_index,)
