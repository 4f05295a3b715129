"""`Backbone`: the base every plugin's ``torch.nn.Module`` backbone extends.

A plugin implements three things:

* ``__init__(config)``: build the modules (attribute names are the checkpoint's key names), set
  ``self.num_features`` (channels of every stage) and ``self.reductions`` (stride of every stage),
  then call ``self.post_init()``.
* ``_forward_features(pixel_values, *, last_stage, output_hidden_states, output_attentions)`` (the
  :class:`~backbones.ForwardRequest`): run stages ``0..last_stage`` and return ``(stage_maps, hidden_states, attentions)`` where
  ``stage_maps[i]`` is the feature map of stage ``i`` *if it is in* ``self.out_positions`` (others
  may be ``None``, so no work is spent on them).
* ``_init_weights(module)``: initialise one module as the reference implementation does.

Optionally ``_prune_stages(last_stage)`` to drop the modules of deeper stages,
``_on_out_features_changed()`` when per-output modules (e.g. output norms) must follow a new selection,
and ``_stage_modules(position)`` for :meth:`Backbone.freeze_stages`. Repeated blocks derived from
:class:`backbones.layers.CheckpointableLayer` make gradient checkpointing work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ._backbone_type import BackboneType
from ._config import BackboneConfig
from ._forward_inputs import ForwardInput, ForwardRequest
from ._output import BackboneOutput
from ._stages import positive_indices
from .layers import CheckpointableLayer, convert_batch_norm_to_frozen

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import LoadOptions

__all__ = ["Backbone", "WEIGHTS_NAME"]

WEIGHTS_NAME = "model.safetensors"


def _flatten_output(output: BackboneOutput) -> tuple[list[Any], None]:
    return [output.feature_maps, output.hidden_states, output.attentions, output.prefix_tokens], None


def _unflatten_output(values: Any, _context: None) -> BackboneOutput:
    feature_maps, hidden_states, attentions, prefix_tokens = values
    return BackboneOutput(feature_maps, hidden_states, attentions, prefix_tokens)


# torch.export, ONNX export and FSDP walk outputs as pytrees; this makes BackboneOutput one of them.
torch.utils._pytree.register_pytree_node(
    BackboneOutput, _flatten_output, _unflatten_output, serialized_type_name="backbones.BackboneOutput"
)


class Backbone(nn.Module):
    """Base class of backbones: metadata known without a forward, transformers' forward contract.

    Every backbone class is built from its config alone, ``XxxBackbone(XxxConfig(...))``, with weights
    initialised as the reference implementation does; the config's ``out_indices`` (or ``out_features``)
    selects the stages :meth:`forward` returns, and can be changed on the model afterwards.
    :meth:`from_config` builds one after counting its parameters, :meth:`from_pretrained` (or
    :meth:`backbones.AutoBackbone.from_pretrained`) loads a checkpoint into one.

    Args:
        config: The architecture and the output selection: an instance of the class's :attr:`config_class`
            (another config is a ``TypeError``).

    Examples:
        A tiny ResNet (``pip install backbones-resnet``) returning its second and fourth stages; every plugin's
        backbone class is used the same way:

        >>> import torch
        >>> from backbones_resnet import ResNetBackbone, ResNetConfig
        >>> config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], out_indices=[2, 4])
        >>> model = ResNetBackbone(config).eval()
        >>> model.stage_names
        ['stem', 'stage1', 'stage2', 'stage3', 'stage4']
        >>> model.out_features, model.channels, model.out_reductions
        (['stage2', 'stage4'], [16, 32], [8, 32])
        >>> [tuple(fmap.shape) for fmap in model(torch.randn(1, 3, 64, 64)).feature_maps]
        [(1, 16, 8, 8), (1, 32, 2, 2)]
        >>> model.out_indices = [-1]
        >>> model.out_features
        ['stage4']

    Class attributes a plugin sets:
        config_class: Its :class:`BackboneConfig` subclass.
        base_model_prefix: Key prefix of the trunk inside task checkpoints (``"resnet"`` for
            ``ResNetForImageClassification``'s ``resnet.embedder...``). Keys are matched with or without it.
        has_attentions: Whether ``output_attentions=True`` can return attention weights.
        ignored_checkpoint_keys: Regexes of checkpoint keys to drop silently (e.g. buffers that older
            transformers releases saved and that are now recomputed).
        checkpoint_key_renames: ``(pattern, replacement)`` regex pairs applied, in order, to checkpoint
            keys that match no model key as they are (e.g. another release's module names).
        reference_class_name: The transformers class name written to ``architectures`` on save (default:
            the class's own name; a subclass gets its own unless it declares one).
        backbone_type: transformers' kind of backbone, which heads branch on:
            :attr:`BackboneType.TRANSFORMERS` (the default) or :attr:`BackboneType.TIMM` (the timm wrapper).
        first_selectable_stage: Stages before this position are computed (they appear in
            ``hidden_states`` and the metadata) but cannot be selected as outputs: selecting one, at
            construction or later, is a ``ValueError``. 0 (the default) lets every stage be selected;
            transformers' ``MaskFormerSwinBackbone`` refuses its ``stem``, so that plugin sets 1.
        freeze_at_extra_stages: How the config's RT-DETR-style ``freeze_at = k >= 0`` counts: the stem and
            ``k + freeze_at_extra_stages`` stages are frozen. 0 (the default) is RT-DETR's ResNet-vd
            (PResNet: ``k`` stages); HGNetV2 (D-FINE) freezes ``k + 1`` and sets 1.
        lora_target_modules: Names of the modules LoRA adapts (attention projections and MLP linears, or
            the convolutions of a CNN), as ``peft.LoraConfig(target_modules=...)`` takes them: a module
            whose name is one of them or ends with ``"." + name``. See docs/training.md, "LoRA".
        input_channel_weights: State-dict keys of the weights that take the image's channels (dimension 1),
            adapted when a checkpoint is loaded with another ``num_channels``. Empty (the default): the
            first convolution, or linear layer, with ``config.num_channels`` inputs.
        extra_forward_inputs: The keyword inputs ``forward`` takes beyond ``pixel_values`` (e.g. ViTPose's
            ``dataset_index``), each a :class:`~backbones.ForwardInput` with its shape per batch item, dtype
            and example values. The plugin's ``forward`` takes them by keyword; ``forward_with_filtered_kwargs``
            keeps them, and the conformance kit passes them in every check that runs the model.
    """

    config_class: ClassVar[type[BackboneConfig]] = BackboneConfig
    base_model_prefix: ClassVar[str] = ""
    has_attentions: ClassVar[bool] = True
    ignored_checkpoint_keys: ClassVar[tuple[str, ...]] = ()
    checkpoint_key_renames: ClassVar[tuple[tuple[str, str], ...]] = ()
    reference_class_name: ClassVar[str] = ""
    backbone_type: ClassVar[BackboneType] = BackboneType.TRANSFORMERS
    first_selectable_stage: ClassVar[int] = 0
    freeze_at_extra_stages: ClassVar[int] = 0
    extra_forward_inputs: ClassVar[tuple[ForwardInput, ...]] = ()
    lora_target_modules: ClassVar[tuple[str, ...]] = ()
    input_channel_weights: ClassVar[tuple[str, ...]] = ()

    num_features: list[int]
    """Channels of every stage, aligned with ``stage_names``."""
    num_prefix_tokens: int = 0
    """Class and register tokens in front of the patch tokens (0: none); a plugin with some sets it, and
    its ``_forward_features`` then takes ``output_prefix_tokens`` (see :meth:`forward`)."""
    reductions: list[int]
    """Stride of every stage relative to the input, aligned with ``stage_names``."""
    _reparameterized: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("reference_class_name"):  # not declared here (or declared empty)
            cls.reference_class_name = cls.__name__

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self._check_selectable(config.stage_names, config.out_features)
        self.config = config
        self._num_kept_stages = len(config.stage_names)
        self._frozen_stages = -1

    def post_init(self) -> None:
        """Initialise every module with :meth:`_init_weights`; plugins call it at the end of ``__init__``."""
        if self.config.output_prefix_tokens and not self.num_prefix_tokens:
            raise ValueError(
                f"{type(self).__name__} has no class or register tokens, so config.output_prefix_tokens=True "
                "cannot be honoured; set it to false"
            )
        for name in ("num_features", "reductions"):
            value = getattr(self, name, None)
            if value is None or len(value) != len(self.stage_names):
                raise TypeError(
                    f"{type(self).__name__}.__init__ must set {name} to one value per stage "
                    f"({len(self.stage_names)}: {self.stage_names}), got {value!r}"
                )
        from ._loading import building_on_meta

        # A model built for a load gets its weights from the checkpoint; modules the checkpoint misses
        # are initialised after materialising. Initialising meta tensors here would cost nothing but
        # torch's imports of its symbolic-shape machinery (sympy, dynamo), a second of process start-up.
        if not building_on_meta():
            self.apply(self._init_weights)
            self._apply_config_freezing()

    def _apply_config_freezing(self) -> None:
        """Apply the config's RT-DETR-style ``freeze_at`` / ``freeze_stem_only`` / ``freeze_norm``
        (see :attr:`BackboneConfig.detection_freezing`) with :meth:`freeze_stages` and :meth:`freeze_batch_norm`."""
        freeze_at, stem_only, freeze_norm = self.config.detection_freezing
        if freeze_at >= 0:
            count = 1 if stem_only else 1 + freeze_at + self.freeze_at_extra_stages
            self.freeze_stages(min(count, self._num_kept_stages))
        if freeze_norm:
            self.freeze_batch_norm()

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise ``module``'s own parameters as the reference implementation does."""

    # -- metadata ---------------------------------------------------------------------------------

    @property
    def stage_names(self) -> list[str]:
        """Names of every stage, shallowest first."""
        return self.config.stage_names

    @property
    def out_features(self) -> list[str]:
        """Names of the returned stages. Assigning re-aligns ``out_indices``."""
        return self.config.out_features

    @out_features.setter
    def out_features(self, value: list[str] | tuple[str, ...] | None) -> None:
        self._select_outputs(value, None)

    @property
    def out_indices(self) -> list[int]:
        """Indices of the returned stages (negative allowed). Assigning re-aligns ``out_features``."""
        return self.config.out_indices

    @out_indices.setter
    def out_indices(self, value: list[int] | tuple[int, ...] | None) -> None:
        self._select_outputs(None, value)

    @property
    def out_positions(self) -> list[int]:
        """``out_indices`` as non-negative positions into ``stage_names``."""
        return positive_indices(self.config.out_indices, len(self.stage_names))

    @property
    def out_feature_channels(self) -> dict[str, int]:
        """Channels of every stage, by stage name."""
        return dict(zip(self.stage_names, self.num_features))

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        channels = self.out_feature_channels
        return [channels[name] for name in self.out_features]

    @property
    def out_reductions(self) -> list[int]:
        """Stride of each returned feature map."""
        return [self.reductions[position] for position in self.out_positions]

    def output_shape(self) -> dict[str, tuple[int, int]]:
        """``{name: (channels, stride)}`` of each returned feature map, in output order.

        The shape description detectron2-style code asks a backbone for (its ``ShapeSpec``), known without
        a forward; it follows the selection (``out_features``).
        """
        return {
            name: (channels, stride)
            for name, channels, stride in zip(self.out_features, self.channels, self.out_reductions)
        }

    def _check_selectable(self, names: list[str], out_features: list[str]) -> None:
        """Refuse a selection of a stage before :attr:`first_selectable_stage`."""
        first = self.first_selectable_stage
        refused = [name for name in out_features if name in names[:first]]
        if refused:
            raise ValueError(
                f"{type(self).__name__} cannot output {refused}: stages {names[:first]} are not exposed (as in "
                f"transformers); select from {names[first:]} (out_indices {first} to {len(names) - 1})"
            )

    def _select_outputs(self, out_features: Any, out_indices: Any) -> None:
        kept = self._num_kept_stages
        if kept < len(self.stage_names) or self.first_selectable_stage:
            from ._stages import align_out_features_out_indices

            features, indices = align_out_features_out_indices(out_features, out_indices, self.stage_names)
            self._check_selectable(self.stage_names, features)
            positions = positive_indices(indices, len(self.stage_names))
            too_deep = [name for name, position in zip(features, positions) if position >= kept]
            if too_deep:
                raise ValueError(
                    f"stages {too_deep} were pruned from this model (it keeps {self.stage_names[:kept]}); "
                    "reload it to output deeper stages"
                )
        self.config.set_out_features_out_indices(out_features, out_indices)
        self._on_out_features_changed()

    def _on_out_features_changed(self) -> None:
        """Hook for backbones with per-output modules; called after the selection changed."""

    # -- forward ----------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        output_prefix_tokens: bool | None = None,
    ) -> BackboneOutput | tuple[Any, ...]:
        """Compute the feature maps of the requested stages.

        Only the stages up to the deepest requested one are run, unless hidden states or attentions are
        requested (they cover every stage).

        Args:
            pixel_values: ``(batch, channels, height, width)`` images.
            output_hidden_states: Also return every stage's hidden state (default: the config's).
            output_attentions: Also return attention weights (attention backbones only; default: the
                config's).
            return_dict: Return a :class:`BackboneOutput` or a plain tuple (default: the config's, True).
            output_prefix_tokens: Also return, per requested stage, the class and register tokens beside
                the feature map (backbones with ``num_prefix_tokens > 0`` only; default: the config's).
                The plugin's ``_forward_features`` is then called with ``output_prefix_tokens=True`` and
                returns a fourth item: per stage position, ``(batch, num_prefix_tokens, channels)`` or ``None``.

        Returns:
            :class:`BackboneOutput`, or ``(feature_maps, [hidden_states], [attentions], [prefix_tokens])``
            when ``return_dict=False``.
        """
        config = self.config
        if output_prefix_tokens is None:
            output_prefix_tokens = config.output_prefix_tokens
        if output_prefix_tokens and not self.num_prefix_tokens:
            raise ValueError(
                f"{type(self).__name__} has no class or register tokens, so output_prefix_tokens=True cannot be "
                "honoured; drop the argument"
            )
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if output_attentions is None:
            output_attentions = config.output_attentions and self.has_attentions
        if return_dict is None:
            return_dict = config.return_dict
        if output_attentions and not self.has_attentions:
            raise ValueError(
                f"{type(self).__name__} has no attention layers, so output_attentions=True cannot be honoured; "
                "drop the argument (forward_with_filtered_kwargs does this for you)"
            )
        self._check_pixel_values(pixel_values)
        pixel_values = self._in_weight_dtype(pixel_values)
        positions = self.out_positions
        # Hidden states and attentions are returned for every stage, as transformers does.
        run_all = output_hidden_states or output_attentions
        last_stage = self._num_kept_stages - 1 if run_all else max(positions, default=0)
        # Only a request passes the argument on, so plugins without prefix tokens never see it.
        extra = {"output_prefix_tokens": True} if output_prefix_tokens else {}
        outputs = self._forward_features(
            pixel_values,
            last_stage=last_stage,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **extra,
        )
        stage_maps, hidden_states, attentions = outputs[:3]
        feature_maps = tuple(stage_maps[position] for position in positions)
        prefix_tokens = tuple(outputs[3][position] for position in positions) if output_prefix_tokens else None
        for name, values in (("map", feature_maps), ("prefix tokens", prefix_tokens or ())):
            if any(value is None for value in values):
                missing = [self.stage_names[p] for p, value in zip(positions, values) if value is None]
                raise RuntimeError(
                    f"{type(self).__name__}._forward_features returned no {name} for requested stages {missing}"
                )
        if not return_dict:
            result: tuple[Any, ...] = (feature_maps,)
            if output_hidden_states:
                result += (hidden_states,)
            if output_attentions:
                result += (attentions,)
            if output_prefix_tokens:
                result += (prefix_tokens,)
            return result
        return BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
            prefix_tokens=prefix_tokens,
        )

    @property
    def minimum_input_size(self) -> int:
        """The smallest height and width the model runs on (smaller inputs are an :class:`~backbones.InputError`).

        The config's ``minimum_input_size`` where it computes one, else its ``patch_size`` (the window of a
        patchifying first layer; the larger side of a pair), else 1. A plugin whose layers need more
        overrides it.
        """
        configured = getattr(self.config, "minimum_input_size", None)
        if isinstance(configured, int) and not isinstance(configured, bool) and configured > 0:
            return configured
        patch = getattr(self.config, "patch_size", None)
        if isinstance(patch, (list, tuple)):
            patch = max(patch, default=1)
        return patch if isinstance(patch, int) and not isinstance(patch, bool) and patch > 0 else 1

    def _check_pixel_values(self, pixel_values: Any) -> None:
        """Refuse, with an :class:`~backbones.InputError` naming the problem, pixels no backbone can run on:
        not a 4-D tensor, an empty batch, integer pixels, or smaller than :attr:`minimum_input_size` (torch would
        fail deep inside the first layer). The channel count is the plugin's to check."""
        from ._errors import InputError

        name = type(self).__name__
        if not isinstance(pixel_values, Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor (batch, channels, height, width), got {type(pixel_values).__name__}; "
                "prepare images with backbones.AutoImageProcessor"
            )
        if pixel_values.dim() != 4:
            raise InputError(
                f"pixel_values must be a 4-D (batch, channels, height, width) tensor, got shape {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[0] == 0:
            raise InputError(
                f"pixel_values has batch size 0 (shape {tuple(pixel_values.shape)}); pass at least one image"
            )
        if not pixel_values.is_floating_point():
            raise InputError(
                f"pixel_values has dtype {pixel_values.dtype}; {name} takes floating-point pixels, e.g. the image "
                "processor's output (or pixel_values.float() / 255 after your own normalisation)"
            )
        if torch.compiler.is_compiling():
            return  # the size limit is a Python-level property of the config: checked in eager runs
        height, width = pixel_values.shape[-2:]
        minimum = self.minimum_input_size
        if height < minimum or width < minimum:
            raise InputError(
                f"pixel_values of {height}x{width} pixels is too small for this {name}: it needs inputs of at least "
                f"{minimum}x{minimum} (minimum_input_size); resize or pad the images"
            )

    def _in_weight_dtype(self, pixel_values: Tensor) -> Tensor:
        """``pixel_values`` in the dtype of the model's (first floating-point) weights.

        fp16/bf16 pixels into a float32 model (or float32 pixels into a bf16 model) would otherwise fail
        inside the first layer with a dtype mismatch; transformers' ViT-family embeddings cast the same way.
        Under autocast the cast is harmless: autocast picks each layer's compute dtype afterwards.
        """
        for parameter in self.parameters():
            if parameter.is_floating_point():
                if parameter.dtype != pixel_values.dtype:
                    return pixel_values.to(parameter.dtype)
                break
        return pixel_values

    def _forward_features(self, pixel_values: Tensor, **request: Unpack[ForwardRequest]) -> tuple[Any, ...]:
        """``(stage_maps, hidden_states, attentions)`` for the :class:`~backbones.ForwardRequest`, plus
        ``prefix_tokens`` when called with ``output_prefix_tokens=True`` (see :meth:`forward`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _forward_features")

    def forward_with_filtered_kwargs(self, *args: Any, **kwargs: Any) -> BackboneOutput | tuple[Any, ...]:
        """Call the backbone, dropping keyword arguments it does not take (as transformers does)."""
        if not self.has_attentions:
            kwargs.pop("output_attentions", None)
        if not self.num_prefix_tokens:
            kwargs.pop("output_prefix_tokens", None)
        accepted = {"pixel_values", "output_hidden_states", "output_attentions", "return_dict", "output_prefix_tokens"}
        accepted.update(spec.name for spec in self.extra_forward_inputs)
        return self(*args, **{key: value for key, value in kwargs.items() if key in accepted})

    # -- pruning ----------------------------------------------------------------------------------

    def prune_unused_stages(self) -> list[str]:
        """Delete the modules of stages deeper than the deepest requested one.

        Their parameters are freed; afterwards only stages up to that one can be requested or
        returned as hidden states.

        Returns:
            Names of the pruned stages.
        """
        last = max(self.out_positions, default=0)
        pruned = self.stage_names[last + 1 : self._num_kept_stages]
        if pruned:
            self._prune_stages(last)
            self._num_kept_stages = last + 1
            # Pruned stages have no modules left to keep frozen (train() walks the frozen ones).
            self._frozen_stages = min(self._frozen_stages, last)
        return pruned

    def _prune_stages(self, last_stage: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support pruning stages")

    @property
    def num_kept_stages(self) -> int:
        """How many stages (from the stem) this model still has modules for."""
        return self._num_kept_stages

    # -- training switches ------------------------------------------------------------------------

    def _checkpointable_layers(self) -> list[CheckpointableLayer]:
        return [module for module in self.modules() if isinstance(module, CheckpointableLayer)]

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block's activations during backward instead of storing them.

        Saves activation memory at the cost of about one more forward. Outputs and gradients are
        unchanged; it only acts in training mode with autograd recording.

        Raises:
            NotImplementedError: The plugin's blocks are not :class:`~backbones.layers.CheckpointableLayer`.
        """
        layers = self._checkpointable_layers()
        if not layers:
            raise NotImplementedError(
                f"{type(self).__name__} does not support gradient checkpointing: none of its modules is a "
                "backbones.layers.CheckpointableLayer (the plugin must derive its blocks from it)"
            )
        for layer in layers:
            layer.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Store activations again (the default)."""
        for layer in self._checkpointable_layers():
            layer.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether gradient checkpointing is switched on."""
        return any(layer.gradient_checkpointing for layer in self._checkpointable_layers())

    def layer_decay_blocks(self) -> list[nn.Module]:
        """The blocks that layer-wise learning-rate decay numbers, in depth order (see :mod:`backbones.training`).

        By default the innermost :class:`~backbones.layers.CheckpointableLayer` modules, in module order; a
        plugin whose repeated blocks are something else overrides it.
        """
        from .training import _innermost_checkpointable_layers

        return _innermost_checkpointable_layers(self)

    def _stage_modules(self, position: int) -> list[nn.Module]:
        """The modules that compute stage ``position`` (0 is the stem), for :meth:`freeze_stages`.

        Per-output modules (output norms) belong to no stage: they stay trainable.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support freezing stages")

    def freeze_stages(self, num_stages: int) -> list[str]:
        """Freeze the first stages: no gradients, and evaluation mode even while the model trains.

        Args:
            num_stages: How many stages to freeze from the stem, ``stage_names[:num_stages]``
                (1 freezes the stem only; 0 unfreezes everything).

        Returns:
            Names of the frozen stages.

        Raises:
            ValueError: ``num_stages`` is negative or larger than the number of kept stages.
        """
        if isinstance(num_stages, bool) or not isinstance(num_stages, int):
            raise TypeError(f"num_stages must be an int, got {type(num_stages).__name__}")
        if not 0 <= num_stages <= self._num_kept_stages:
            raise ValueError(
                f"num_stages must be between 0 and {self._num_kept_stages} (the stages {self.stage_names[: self._num_kept_stages]}), got {num_stages}"
            )
        for position in range(self._num_kept_stages):
            for module in self._stage_modules(position):
                module.requires_grad_(position >= num_stages)
        self._frozen_stages = num_stages - 1
        self.train(self.training)
        return self.stage_names[:num_stages]

    @property
    def frozen_stages(self) -> list[str]:
        """Names of the stages frozen by :meth:`freeze_stages`."""
        return self.stage_names[: self._frozen_stages + 1]

    def train(self, mode: bool = True) -> Backbone:
        """Set training mode; frozen stages (see :meth:`freeze_stages`) stay in evaluation mode.

        Raises:
            ReparameterizedError: ``mode`` is true and the model was folded by :meth:`reparameterize`.
        """
        if mode and self._reparameterized:
            from ._errors import ReparameterizedError

            raise ReparameterizedError(
                f"{type(self).__name__} was reparameterised for inference (its BatchNorms and branches are "
                "folded), so it cannot train; load the checkpoint again to fine-tune"
            )
        super().train(mode)
        for position in range(self._frozen_stages + 1):
            for module in self._stage_modules(position):
                module.eval()
        return self

    def freeze_batch_norm(self) -> int:
        """Replace every BatchNorm by a :class:`~backbones.layers.FrozenBatchNorm2d` (detection-style training).

        Running statistics then never change, in training mode too, and the affine terms are not
        trained. Weights already loaded are kept. Returns how many layers were replaced (0 for
        backbones without BatchNorm).
        """
        return self._freeze_batch_norm()

    def _freeze_batch_norm(self) -> int:
        return convert_batch_norm_to_frozen(self)

    def reparameterize(self) -> int:
        """Fold every reparameterisable block (see :mod:`backbones.reparam`) for inference, in place.

        Multi-branch blocks become one convolution and Conv→BatchNorm pairs one convolution, with the
        same outputs (to float rounding). The model is put in evaluation mode first and cannot train or
        be saved afterwards. Plugins whose blocks implement
        :class:`~backbones.reparam.Reparameterizable` support it; see :attr:`supports_reparameterize`.

        Returns:
            How many blocks were folded (0 for an architecture with nothing to fold, or one already folded).
        """
        from .reparam import reparameterize

        if self._reparameterized:
            return 0
        self.eval()
        count = reparameterize(self)
        for module in self.modules():
            if isinstance(module, Backbone):
                module._reparameterized = True
        return count

    @property
    def supports_reparameterize(self) -> bool:
        """Whether any block of this model folds for inference (see :meth:`reparameterize`)."""
        from .reparam import Reparameterizable

        return any(
            isinstance(module, Reparameterizable) and not isinstance(module, Backbone) for module in self.modules()
        )

    @property
    def is_reparameterized(self) -> bool:
        """Whether :meth:`reparameterize` has folded this model."""
        return self._reparameterized

    # -- persistence ------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` in transformers' format.

        Both files are written atomically. Returns the directory.
        """
        if self.is_reparameterized:
            from ._errors import ReparameterizedError

            raise ReparameterizedError(
                f"{type(self).__name__} was reparameterised for inference: its weights no longer have the "
                "checkpoint's keys; save the model before calling reparameterize()"
            )
        from ._loading import save_checkpoint

        return save_checkpoint(self, Path(directory))

    @classmethod
    def from_config(cls, config: BackboneConfig, *, max_parameters: int | None = None) -> Backbone:
        """Build a randomly initialised backbone from ``config``.

        Its parameters are counted on the meta device first: a config bigger than ``max_parameters``
        (default ``BACKBONES_MAX_PARAMETERS``, else 20 billion) is refused before anything is allocated;
        unknown config fields are reported once (see :meth:`BackboneConfig.unknown_fields`).
        """
        from ._loading import build_backbone

        return build_backbone(cls, config, max_parameters=max_parameters)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], *, load_options: LoadOptions | None = None, **kwargs: Any
    ) -> Any:
        """Load a checkpoint into this class; see :meth:`backbones.AutoBackbone.from_pretrained`.

        Args:
            name_or_path: Local directory or hub repository id.
            load_options: Options to start from (see :class:`backbones.LoadOptions`).
            **kwargs: Load options by name (they replace fields of ``load_options``), and config-field
                overrides.

        Returns:
            The backbone in eval mode, or ``(backbone, report)`` with ``output_loading_info=True``.
        """
        from ._loading import load_pretrained
        from ._options import LoadOptions

        options, config_overrides = LoadOptions.split(kwargs, base=load_options)
        return load_pretrained(name_or_path, options, config_overrides, model_class=cls)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}"

    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for a model without parameters)."""
        for parameter in self.parameters():
            return parameter.device
        return torch.device("cpu")
