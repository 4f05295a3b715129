"""Building blocks that the :class:`~backbones.Backbone` training switches act on.

* :class:`CheckpointableLayer`: base class of a plugin's repeated blocks (a transformer layer, a
  residual block, a stage). ``Backbone.gradient_checkpointing_enable()`` makes each of them recompute
  its activations in the backward pass instead of storing them.
* :class:`FrozenBatchNorm2d`: BatchNorm with fixed statistics and affine terms, which
  ``Backbone.freeze_batch_norm()`` puts in place of every ``nn.BatchNorm2d``.
* :class:`ConvNormActivation`: convolution, BatchNorm and optional activation, foldable for inference;
  :class:`LearnableAffine`, the learnable scalar affine that may follow its activation.
* :func:`drop_path`: stochastic depth for residual branches; :func:`drop_path_rates`, its usual schedule.
* :func:`init_linear_and_norm_`: transformers' default initialisation of linear, convolution and layer-norm
  modules, which most plugins' ``_init_weights`` start from; :func:`init_conv_and_batch_norm_`, the CNNs' one.
* :func:`check_pixel_channels`: the shared error for inputs with the wrong number of channels.
* :func:`run_stem_and_stages`: the forward of a trunk that is a stem followed by a list of stages.
* :class:`StemAndStages`: the stage hooks (forward, freezing, pruning) of a backbone built that way;
  :class:`StageList`, the module that holds such a trunk's stages under the key ``stages``, and
  :class:`BlockSequence`, a stage that runs its blocks in order under the key ``layers``.
* :func:`run_token_layers`: the forward of a plain vision transformer's layers, one stage each.
* :func:`attend`: multi-head scaled dot-product attention that returns the probabilities when asked.
* :func:`linear`: a linear layer and the activation after it, as one oneDNN call in CPU inference.
* :func:`reselect_output_modules`: per-output modules (e.g. output norms) following a new selection.
* :func:`module_group`: a parameterless holder of named modules, for a checkpoint's key paths;
  :func:`query_key_value_projections`, the three same-width projections of a multi-head attention.
* :func:`transformer_layer_options`: a transformer layer's keyword arguments read from the config fields of the
  same names (:class:`TransformerLayerConfig`, :class:`TransformerLayerOptions`).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Container, Iterable, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _torch_module
from torch.utils.checkpoint import checkpoint

from .activations import make_activation

if TYPE_CHECKING:
    from ._backbone import Backbone

__all__ = [
    "CheckpointableLayer",
    "ConvNormActivation",
    "StemAndStages",
    "StageList",
    "BlockSequence",
    "FrozenBatchNorm2d",
    "LearnableAffine",
    "TransformerLayerConfig",
    "TransformerLayerOptions",
    "attend",
    "check_pixel_channels",
    "convert_batch_norm_to_frozen",
    "drop_path",
    "drop_path_rates",
    "init_conv_and_batch_norm_",
    "init_linear_and_norm_",
    "linear",
    "module_group",
    "query_key_value_projections",
    "reselect_output_modules",
    "run_stem_and_stages",
    "run_token_layers",
    "transformer_layer_options",
]


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth (Huang et al., 2016): zero a whole sample's residual branch with probability
    ``rate`` and rescale the kept ones by ``1 / (1 - rate)``; the identity outside training or at rate 0.

    The mask is drawn as ``floor(keep + U[0, 1))`` per sample, as the reference implementations draw it.
    """
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    kept = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).add_(keep).floor_()
    return x.div(keep) * kept


def drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """The stochastic-depth rate of every block, per stage: growing linearly over all blocks of the network
    from 0 (the first) to ``rate`` (the last), as transformers' and timm's models schedule it.

    Args:
        rate: The deepest block's rate (a config's ``drop_path_rate``).
        depths: Blocks per stage (``[num_hidden_layers]`` for a plain transformer).

    Returns:
        One list per stage, one rate per block.
    """
    total = sum(depths)
    rates = [rate * block / max(total - 1, 1) for block in range(total)]
    starts = [sum(depths[:index]) for index in range(len(depths))]
    return [rates[start : start + depth] for start, depth in zip(starts, depths)]


class CheckpointableLayer(nn.Module):
    """A module that runs under activation checkpointing while its backbone has it switched on.

    Plugins derive their repeated blocks from it instead of ``nn.Module``; nothing else changes. When
    ``gradient_checkpointing`` is set (by ``Backbone.gradient_checkpointing_enable``), the module is in
    training mode and autograd is recording, a call runs through
    ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: the forward's activations are
    dropped and recomputed during backward, trading compute for memory. Outputs and gradients are the
    same as without it (RNG state is replayed, so dropout masks match).
    """

    gradient_checkpointing: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(super().__call__, *args, use_reentrant=False, **kwargs)
        return super().__call__(*args, **kwargs)


class FrozenBatchNorm2d(nn.Module):
    """``nn.BatchNorm2d`` whose statistics and affine terms are constants.

    Its state-dict keys are BatchNorm's (``weight``, ``bias``, ``running_mean``, ``running_var``), held
    as buffers, so checkpoints load unchanged (``num_batches_tracked`` is accepted and dropped). The
    output is the same in training and evaluation mode: ``(x - mean) / sqrt(var + eps) * weight + bias``.
    """

    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batch_norm(cls, module: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of ``module``'s current statistics and affine terms."""
        frozen = cls(module.num_features, module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.running_mean is not None and module.running_var is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen.to(device=module.weight.device if module.affine else None)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, hidden: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return hidden * scale.to(hidden.dtype).view(1, -1, 1, 1) + shift.to(hidden.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class LearnableAffine(nn.Module):
    """``scale * x + bias`` with one learnable scalar each (keys ``scale``, ``bias``): PaddlePaddle's learnable
    affine block (transformers' ``lab``), as HGNetV2 and PP-LCNet put it after activations.

    Args:
        trainable: Parameters (the default), or buffers: the values of a checkpoint's affine that the
            network never runs, kept under their keys for the round trip but not trained (DDP requires
            every parameter to take part in the loss).
    """

    scale: Tensor
    bias: Tensor

    def __init__(self, trainable: bool = True) -> None:
        super().__init__()
        if trainable:
            self.scale = nn.Parameter(torch.ones(1))
            self.bias = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("scale", torch.ones(1))
            self.register_buffer("bias", torch.zeros(1))

    def forward(self, hidden: Tensor) -> Tensor:
        """``scale * hidden + bias``, any shape."""
        return torch.addcmul(self.bias, hidden, self.scale)


class ConvNormActivation(nn.Module):
    """A convolution, a BatchNorm, then an optional activation (and affine): the conv-BN-act unit of most CNNs.

    The keys are ``convolution`` and ``normalization`` (transformers' names for this unit in ResNet, HGNetV2,
    PP-LCNet, UVDoc, ...). :meth:`reparameterize` folds the BatchNorm, or its frozen form, into the
    convolution for inference (:class:`backbones.reparam.Reparameterizable`); ``normalization`` is then
    ``None``. Plugins derive their own unit from it to add what follows the activation.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Side of the square kernel.
        stride: Stride of the convolution, an int or a ``(height, width)`` pair.
        padding: Zero padding on every side; ``None`` (the default) pads by ``dilation * (kernel_size // 2)``,
            which keeps the size at stride 1 for odd kernels.
        dilation: Dilation of the convolution.
        groups: Convolution groups.
        bias: Whether the convolution has a bias.
        activation: The activation after the norm: a module, a name of :data:`backbones.activations.ACTIVATIONS`
            (built in place: it reads the norm's fresh output only), or ``None`` for none.
        affine: Follow the activation by a :class:`LearnableAffine` (key ``lab``); only where there is an
            activation, as transformers builds HGNetV2's and PP-LCNet's units (``lab`` is ``None`` otherwise).

    Example:
        >>> unit = ConvNormActivation(3, 16, 3, 2, activation=nn.ReLU(inplace=True))  # doctest: +SKIP
        >>> unit(torch.randn(1, 3, 32, 32)).shape  # doctest: +SKIP
        torch.Size([1, 16, 16, 16])
    """

    normalization: nn.Module | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | tuple[int, int] = 1,
        *,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        activation: nn.Module | str | None = None,
        affine: bool = False,
    ) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2) if padding is None else padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.normalization = nn.BatchNorm2d(out_channels)
        # None rather than nn.Identity: one module call fewer per unit, and the state dict is the same.
        self.activation = make_activation(activation, inplace=True) if isinstance(activation, str) else activation
        self.lab = LearnableAffine() if activation is not None and affine else None

    def forward(self, hidden: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` to ``(B, out_channels, H', W')``."""
        hidden = self.convolution(hidden)
        if self.normalization is not None:
            hidden = self.normalization(hidden)
        if self.activation is not None:
            hidden = self.activation(hidden)
        if self.lab is not None:
            hidden = self.lab(hidden)
        return hidden

    def reparameterize(self) -> None:
        """Fold the BatchNorm (or its frozen form) into the convolution, which gains a bias; in place (the
        affine follows the activation, so it stays)."""
        norm = self.normalization
        if isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            from .reparam import fuse_conv_bn  # reparam imports this module

            self.convolution = fuse_conv_bn(self.convolution, norm)
            self.normalization = None


def convert_batch_norm_to_frozen(module: nn.Module) -> int:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` with a :class:`FrozenBatchNorm2d`, in place.

    Returns:
        How many were replaced.

    Raises:
        TypeError: A subclass of ``nn.BatchNorm2d`` with behaviour of its own (such as a fused
            activation) was found; its backbone must override ``Backbone._freeze_batch_norm``.
    """
    count = 0
    for name, child in list(module.named_children()):
        if type(child) in (nn.BatchNorm2d, nn.SyncBatchNorm):
            setattr(module, name, FrozenBatchNorm2d.from_batch_norm(child))  # type: ignore[arg-type]
            count += 1
        elif isinstance(child, nn.BatchNorm2d):
            raise TypeError(
                f"cannot freeze {name} ({type(child).__name__}): it subclasses nn.BatchNorm2d with behaviour of "
                "its own; the backbone must override _freeze_batch_norm to convert it"
            )
        else:
            count += convert_batch_norm_to_frozen(child)
    return count


def init_linear_and_norm_(module: nn.Module, std: float, *, truncated: bool = False) -> bool:
    """Initialise ``module``'s own parameters as transformers' vision models do by default, if it is a
    linear, convolution or layer-norm module.

    ``nn.Linear`` and ``nn.Conv2d``: weight from a normal distribution of mean 0 and standard deviation ``std``
    (``nn.init.trunc_normal_``'s, cut at -2 and 2, if ``truncated``), bias 0. ``nn.LayerNorm``: weight 1,
    bias 0. Meant for a backbone's ``_init_weights``, before its architecture-specific cases.

    Args:
        module: The module (its children are not visited).
        std: Standard deviation of the weights (a config's ``initializer_range``).
        truncated: Draw from the truncated normal distribution (DINOv2, ViTDet) instead of the normal one.

    Returns:
        Whether ``module`` was one of those kinds (and so is initialised).
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        _init_normal_weight_zero_bias_(module, std, truncated=truncated)
        return True
    if isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        return True
    return False


def _init_normal_weight_zero_bias_(module: nn.Linear | nn.Conv2d, std: float, *, truncated: bool = False) -> None:
    """Draw ``module.weight`` from a normal distribution of mean 0 and standard deviation ``std`` (the
    truncated one, cut at -2 and 2, if ``truncated``) and zero its bias, if it has one."""
    if truncated:
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std)
    else:
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def init_conv_and_batch_norm_(module: nn.Module, std: float | None = None) -> bool:
    """Initialise ``module``'s own parameters as transformers' convolutional models do, if it is a convolution,
    a BatchNorm or a :class:`LearnableAffine`.

    ``nn.Conv2d``: with ``std``, weight from a normal distribution of mean 0 and standard deviation ``std`` and
    bias 0; without, He's normal initialisation for ReLU (``kaiming_normal_``, ``mode="fan_out"``, as
    transformers' ResNet), bias untouched. ``nn.BatchNorm2d``: weight 1, bias 0, running statistics reset.
    :class:`LearnableAffine`: scale 1, bias 0 (the identity, as transformers' HGNetV2 and PP-LCNet).
    Meant for a backbone's ``_init_weights``, before its architecture-specific cases.

    Args:
        module: The module (its children are not visited).
        std: Standard deviation of the convolution weights (a config's ``initializer_range``), or ``None``
            for He's initialisation.

    Returns:
        Whether ``module`` was one of those kinds (and so is initialised).
    """
    if isinstance(module, nn.Conv2d):
        if std is None:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        else:
            _init_normal_weight_zero_bias_(module, std)
        return True
    if isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
        module.reset_running_stats()
        return True
    if isinstance(module, LearnableAffine):
        nn.init.ones_(module.scale)
        nn.init.zeros_(module.bias)
        return True
    return False


def check_pixel_channels(pixel_values: Tensor, expected: int, model: str) -> None:
    """Require ``(batch, channels, height, width)`` pixels to have the channels a model was built for.

    Args:
        pixel_values: The model input.
        expected: The channels the model takes (its config's ``num_channels``).
        model: How to name the model in the message (``"ResNet"``, ``"DINOv2"``, ...).

    Raises:
        InputError: ``pixel_values.shape[1] != expected`` (a ``ValueError``); the message names both counts
            and the fix.
    """
    if pixel_values.shape[1] != expected:
        from ._errors import InputError

        raise InputError(
            f"pixel_values has {pixel_values.shape[1]} channels but this {model} expects {expected} "
            "(config.num_channels); convert the images or load a model built for that many channels"
        )


def run_stem_and_stages(
    stem: nn.Module,
    stages: nn.ModuleList,
    pixel_values: Tensor,
    *,
    last_stage: int,
    num_stages: int,
    output_hidden_states: bool,
) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, None]:
    """Forward of a convolutional trunk whose stage 0 is ``stem`` and stage ``i`` is ``stages[i - 1]``.

    Meant as the body of a backbone's ``_forward_features`` (ResNet-like trunks, whose stages each take the
    previous stage's map).

    Args:
        stem: Module of stage 0.
        stages: The later stages, in order.
        pixel_values: The input images.
        last_stage: Deepest stage to run; deeper stages are skipped.
        num_stages: Number of stage names (stem included): the length of the returned list.
        output_hidden_states: Also return every computed map as a tuple.

    Returns:
        ``(stage_maps, hidden_states, None)``: the map of every stage (``None`` past ``last_stage``), the
        computed maps when ``output_hidden_states``, and no attentions.
    """
    hidden = stem(pixel_values)
    states = [hidden]
    # islice, not a slice: slicing a ModuleList builds a new module on every call.
    for stage in islice(stages, last_stage):
        hidden = stage(hidden)
        states.append(hidden)
    stage_maps: list[Tensor | None] = [*states, *([None] * (num_stages - len(states)))]
    return stage_maps, tuple(states) if output_hidden_states else None, None


class StageList(nn.Module):
    """The stages of a trunk under the key ``stages`` (the ``encoder.stages.<i>`` keys of transformers' CNNs);
    the backbone runs them (:func:`run_stem_and_stages`), and pruning shortens the list.

    Args:
        stages: The stages, shallowest first.
    """

    def __init__(self, stages: Iterable[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)


class BlockSequence(nn.Module):
    """A stage that runs its blocks in order, held under the key ``layers`` (``layers.<i>``, the keys of
    transformers' ResNet and PP-LCNet stages).

    Args:
        blocks: The blocks, in order.
    """

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*blocks)

    def forward(self, hidden: Tensor) -> Tensor:
        """The blocks applied in order."""
        return self.layers(hidden)


class StemAndStages:
    """Stage hooks of a :class:`~backbones.Backbone` whose stage 0 is one stem module and stage ``i >= 1`` is
    ``stages[i - 1]`` of one ``nn.ModuleList`` (ResNet-like trunks).

    List it before ``Backbone`` in the bases and implement :meth:`_stem_and_stages`; it supplies
    ``_forward_features`` (:meth:`_check_input_channels`, then :func:`run_stem_and_stages`), ``_stage_modules``
    (the stem, or one stage, for ``freeze_stages``) and ``_prune_stages`` (drops the stages past the last one
    kept; the stem is always kept). A backbone whose forward differs (stages that do not chain) overrides
    ``_forward_features`` and keeps the other two.

    Attributes:
        input_model_name: How the wrong-channels error names the model (``"ResNet"``, ``"BiT"``, ...).

    Example:
        >>> class MyBackbone(StemAndStages, Backbone):  # doctest: +SKIP
        ...     input_model_name = "MyNet"
        ...     def _stem_and_stages(self):
        ...         return self.embedder, self.encoder.stages
    """

    input_model_name: ClassVar[str] = "model"

    def _stem_and_stages(self) -> tuple[nn.Module, nn.ModuleList]:
        """The stem module (stage 0) and the list of the later stages (stage ``i`` is item ``i - 1``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _stem_and_stages")

    def _check_input_channels(self, pixel_values: Tensor) -> None:
        """Refuse ``pixel_values`` whose channels are not ``config.num_channels`` (:func:`check_pixel_channels`)."""
        config: Any = cast("Backbone", self).config
        check_pixel_channels(pixel_values, config.num_channels, self.input_model_name)

    def _forward_features(
        self, pixel_values: Tensor, *, last_stage: int, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[Tensor | None], tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        self._check_input_channels(pixel_values)
        stem, stages = self._stem_and_stages()
        return run_stem_and_stages(
            stem,
            stages,
            pixel_values,
            last_stage=last_stage,
            num_stages=len(cast("Backbone", self).stage_names),
            output_hidden_states=output_hidden_states,
        )

    def _stage_modules(self, position: int) -> list[nn.Module]:
        stem, stages = self._stem_and_stages()
        return [stem] if position == 0 else [stages[position - 1]]

    def _prune_stages(self, last_stage: int) -> None:
        del self._stem_and_stages()[1][last_stage:]


def run_token_layers(
    tokens: Tensor,
    layers: nn.ModuleList,
    *,
    last_stage: int,
    out_positions: Container[int],
    num_stages: int,
    feature_map: Callable[[Tensor, int], Any],
    output_hidden_states: bool,
    output_attentions: bool,
    layer_inputs: tuple[Any, ...] = (),
    output_prefix_tokens: bool = False,
) -> tuple[Any, ...]:
    """Forward of a plain vision transformer whose stage 0 is the embedded ``tokens`` and stage ``p`` the output
    of ``layers[p - 1]``.

    Meant as the body of a backbone's ``_forward_features``. Each layer is called as
    ``layer(tokens, *layer_inputs, output_attentions)`` and returns ``(tokens, attention weights or None)``.

    Args:
        tokens: The embeddings' output (stage 0).
        layers: The transformer layers, in order.
        last_stage: Deepest stage to run; deeper layers are skipped.
        out_positions: Stages whose feature map is returned.
        num_stages: Number of stage names (stem included): the length of the returned list.
        feature_map: ``feature_map(tokens, position)``, the feature map of a stage's tokens; with
            ``output_prefix_tokens``, the pair ``(feature map, prefix tokens)``.
        output_hidden_states: Also return every computed stage's tokens.
        output_attentions: Also return every run layer's attention weights.
        layer_inputs: Further inputs every layer takes after the tokens (e.g. rotary position embeddings).
        output_prefix_tokens: ``feature_map`` returns pairs, and the selected stages' prefix tokens are
            returned as a fourth item (see :meth:`backbones.Backbone.forward`).

    Returns:
        ``(stage_maps, hidden_states, attentions)``: the map of every selected stage (``None`` elsewhere), the
        tokens of every computed stage when ``output_hidden_states``, the attention weights when
        ``output_attentions``; then, with ``output_prefix_tokens``, the prefix tokens of every selected stage.
    """
    maps: list[Tensor | None] = [None] * num_stages
    prefixes: list[Tensor | None] = [None] * num_stages
    hidden_states: list[Tensor] = []
    attentions: list[Tensor] = []
    for position in range(last_stage + 1):
        if position:
            tokens, weights = layers[position - 1](tokens, *layer_inputs, output_attentions)
            if weights is not None:
                attentions.append(weights)
        if position in out_positions:
            if output_prefix_tokens:
                maps[position], prefixes[position] = feature_map(tokens, position)
            else:
                maps[position] = feature_map(tokens, position)
        if output_hidden_states:
            hidden_states.append(tokens)
    outputs = (
        maps,
        tuple(hidden_states) if output_hidden_states else None,
        tuple(attentions) if output_attentions else None,
    )
    return (*outputs, prefixes) if output_prefix_tokens else outputs


def attend(
    query: Tensor, key: Tensor, value: Tensor, *, dropout: float, training: bool, need_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention of ``(batch, heads, tokens, head_width)`` queries, keys and values.

    Without ``need_weights`` it is one fused ``F.scaled_dot_product_attention`` call; with it, the scores
    ``query @ key^T / sqrt(head_width)`` are soft-maxed and kept, so the probabilities can be returned (what
    transformers' eager attention computes).

    Args:
        query: ``(batch, heads, tokens, head_width)``.
        key: ``(batch, heads, key_tokens, head_width)``.
        value: ``(batch, heads, key_tokens, value_width)``.
        dropout: Dropout rate on the probabilities, applied only when ``training``.
        training: Whether the calling module is in training mode.
        need_weights: Also return the probabilities.

    Returns:
        The context ``(batch, heads, tokens, value_width)`` and the probabilities ``(batch, heads, tokens,
        key_tokens)`` (after dropout) or ``None``.
    """
    rate = dropout if training else 0.0
    if not need_weights:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=rate), None
    scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5
    weights = F.dropout(scores.softmax(dim=-1), rate, training)
    return torch.matmul(weights, value), weights


def _onednn_linear() -> Callable[..., Tensor] | None:
    """torch's oneDNN matmul with a fused bias and activation (the kernel ``torch.compile`` fuses a linear
    layer and its activation into on the CPU), or ``None`` where this build or machine lacks it. Only
    x86-64 is enabled: it is the platform where it was measured faster than the default ``addmm``."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    try:
        return cast("Callable[..., Tensor]", torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear()
# Below this many multiply-adds the oneDNN call's fixed cost (about 15 microseconds) outweighs its gain.
_ONEDNN_MIN_WORK = 1 << 21
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _cpu_autocast_check() -> Callable[[], bool]:
    """Whether CPU autocast is on: ``torch.is_autocast_enabled("cpu")`` (torch 2.4 on), else the older call."""
    try:
        torch.is_autocast_enabled("cpu")  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        return torch.is_autocast_cpu_enabled
    return lambda: torch.is_autocast_enabled("cpu")  # type: ignore[call-arg,unused-ignore]


_cpu_autocast = _cpu_autocast_check()


def _onednn_activation(activation: nn.Module | None) -> tuple[str, list[float], str] | None:
    """The oneDNN post-op computing ``activation`` (its name, scalars and algorithm), or ``None``."""
    if activation is None or type(activation) is nn.Identity:
        return ("none", [], "")
    if type(activation) is nn.GELU:
        return ("gelu", [], activation.approximate)
    if type(activation) is nn.ReLU:
        return ("relu", [], "")
    if type(activation) is nn.SiLU:
        return ("swish", [], "")
    return None


def _plain_call(module: nn.Module) -> bool:
    """Whether calling ``module`` would only run its ``forward``: no hooks of its own or global ones."""
    return not (
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or _torch_module._global_forward_hooks
        or _torch_module._global_forward_pre_hooks
        or _torch_module._global_backward_hooks
        or _torch_module._global_backward_pre_hooks
    )


def linear(x: Tensor, layer: nn.Module, activation: nn.Module | None = None) -> Tensor:
    """``activation(layer(x))`` (``layer(x)`` without an activation), computed as one oneDNN matmul with
    the bias and the activation fused where that is the same computation, only faster.

    That is CPU inference on x86-64 (no autograd: ``torch.inference_mode()`` or ``torch.no_grad()``) of a
    plain ``nn.Linear`` (not a LoRA wrapper or a quantised layer; no hooks) on a float32 or bfloat16 tensor
    outside autocast, tracing and compilation, and work of at least about two million multiply-adds;
    ``activation`` is then GELU, ReLU, SiLU or nothing. Everything else (training, CUDA, ``torch.compile``,
    ``torch.export``, ONNX, small layers, other activations) runs the modules as called. The results agree
    with the modules' to float rounding (oneDNN sums in another order than ``addmm``); measured here,
    5-10% less time for a ViT's or ConvNeXt's forward.

    Args:
        x: ``(..., in_features)``.
        layer: The linear layer (any module: only an ``nn.Linear`` is fused).
        activation: The activation after it, or ``None``.

    Returns:
        ``(..., out_features)``.
    """
    post_op = _onednn_activation(activation)
    if (
        _ONEDNN_LINEAR is not None
        and post_op is not None
        and isinstance(layer, nn.Linear)
        and type(layer).forward is nn.Linear.forward
        and type(x) is Tensor
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype in _ONEDNN_DTYPES
        and layer.weight.dtype == x.dtype
        and type(layer.weight) in (Tensor, nn.Parameter)
        and x.numel() * layer.out_features >= _ONEDNN_MIN_WORK
        and torch.backends.mkldnn.enabled
        and not _cpu_autocast()
        and not torch._C._get_tracing_state()  # torch.jit.trace (ONNX's TorchScript exporter)
        and not torch.compiler.is_compiling()
        and _plain_call(layer)
        and (activation is None or _plain_call(activation))
    ):
        return _ONEDNN_LINEAR(x, layer.weight, layer.bias, *post_op)
    out = layer(x)
    return out if activation is None else activation(out)


def reselect_output_modules(
    current: nn.ModuleDict, out_features: Iterable[str], make: Callable[[str], nn.Module]
) -> nn.ModuleDict:
    """The per-output modules of a new stage selection (a backbone's ``_on_out_features_changed``).

    A selected stage keeps its module (trained weights stay); a newly selected one gets ``make(name)``; those
    of deselected stages are dropped. The result is ordered as ``out_features``, so the state dict is that of
    a model built for the new selection (same keys, same order).

    Args:
        current: The modules by stage name.
        out_features: The new selection.
        make: Builds the module of a newly selected stage (on the model's device and dtype).

    Returns:
        A new ``nn.ModuleDict``; assign it in place of ``current``.
    """
    return nn.ModuleDict({name: current[name] if name in current else make(name) for name in out_features})


def module_group(**children: nn.Module) -> Any:
    """A parameterless module that only holds ``children`` under their names, to reproduce a checkpoint's key
    paths (``encoder.layer.N``, ``output.dense``, ``pooler.norm``, ...) without a class for each holder.

    Args:
        **children: The modules to hold, by attribute name (the next part of their key path).

    Returns:
        The holder, typed ``Any``: its attributes are the children named at run time, which a type checker
        cannot see.
    """
    holder = nn.Module()
    for name, child in children.items():
        holder.add_module(name, child)
    return holder


def query_key_value_projections(
    width: int, *, bias: bool = True, key_bias: bool | None = None
) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """The separate query, key and value projections of a multi-head attention (transformers' ``query``,
    ``key``, ``value`` keys), each ``width`` to ``width`` wide, created in that order (so a seeded
    initialisation draws the same weights as three ``nn.Linear`` written out).

    Args:
        width: Input and output channels of each projection.
        bias: Whether the projections have a bias (a config's ``qkv_bias``).
        key_bias: Whether the key projection has one, where it differs from ``bias`` (BEiT's and Swin V2's
            keys have none: the softmax is invariant to it); ``None``: ``bias``.

    Returns:
        ``(query, key, value)``, to assign in that order so the modules register as the checkpoint lists them.
    """
    return (
        nn.Linear(width, width, bias=bias),
        nn.Linear(width, width, bias=bias if key_bias is None else key_bias),
        nn.Linear(width, width, bias=bias),
    )


class TransformerLayerConfig(Protocol):
    """The config fields :func:`transformer_layer_options` reads (transformers' names for them)."""

    @property
    def mlp_ratio(self) -> float:
        """Hidden width of the MLP relative to ``hidden_size``."""
        ...

    @property
    def qkv_bias(self) -> bool:
        """Whether the query, key and value projections have a bias."""
        ...

    @property
    def hidden_act(self) -> str:
        """Activation of the MLP (a name of :data:`backbones.activations.ACTIVATIONS`)."""
        ...

    @property
    def layer_norm_eps(self) -> float:
        """Epsilon of the layer norms."""
        ...


class TransformerLayerOptions(TypedDict):
    """Keyword arguments that a transformer layer's constructor takes under the names of the config fields they
    come from (DINOv2's, ViTDet's, NAT's, Swin's layers): see :class:`TransformerLayerConfig`."""

    mlp_ratio: float
    qkv_bias: bool
    hidden_act: str
    layer_norm_eps: float


def transformer_layer_options(config: TransformerLayerConfig) -> TransformerLayerOptions:
    """The MLP width, projection bias, activation and norm epsilon of a config's transformer layers, as keyword
    arguments for a layer's constructor: ``Layer(width, heads, **transformer_layer_options(config), ...)``.

    Args:
        config: A config with the fields of :class:`TransformerLayerConfig`.

    Returns:
        ``mlp_ratio``, ``qkv_bias``, ``hidden_act`` and ``layer_norm_eps``, read from the fields of those names.
    """
    return TransformerLayerOptions(
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
    )
