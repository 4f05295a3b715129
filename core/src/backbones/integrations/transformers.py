"""Any backbone inside transformers' heads (UperNet, Mask2Former, DETR, DPT, ...): ``pip install "backbones-core[transformers]"``.

transformers' heads build their backbone with their own ``load_backbone(config)``, which asks transformers'
``AutoBackbone`` for the class registered for ``config.backbone_config``. :func:`backbone_config` returns
such a config for one of our model types: a transformers ``PretrainedConfig`` whose ``model_type`` is
``"backbones_<type>"`` (``"backbones_swin"``), registered with transformers' ``AutoConfig`` and
``AutoBackbone`` through their public ``register`` API, together with :class:`TransformersBackbone`, the
transformers model that runs our backbone. A head given it as ``backbone_config`` runs on our plugin,
including types transformers cannot run (DiNAT without natten, NAT, any third-party plugin).

The backbone's weights keep its own state-dict keys, which are transformers', under the head's prefix
(``backbone.swin.embeddings...`` for swin): a head checkpoint made with transformers' own backbone of the
same architecture loads into the bridged head as it is.

A head saved with ``save_pretrained`` writes ``"model_type": "backbones_swin"`` in its ``backbone_config``;
to load it in a new process, call :func:`register` (or :func:`register_all`) first, as transformers requires
for any class registered from outside.

Example:
    >>> from transformers import UperNetConfig, UperNetForSemanticSegmentation
    >>> from backbones.integrations.transformers import backbone_config
    >>> config = UperNetConfig(backbone_config=backbone_config("dinat", out_indices=[1, 2, 3, 4]))  # doctest: +SKIP
    >>> model = UperNetForSemanticSegmentation(config)                                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, ClassVar, Generic, TypeVar, overload

import torch
from torch import nn
from transformers import AutoBackbone as TransformersAutoBackbone
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from .._backbone import Backbone
from .._config import BackboneConfig

__all__ = ["BridgeConfig", "TransformersBackbone", "backbone_config", "register", "register_all"]

PREFIX = "backbones_"
_lock = threading.Lock()
_registered: dict[str, type[BridgeConfig]] = {}
_T = TypeVar("_T")


class BridgeConfig(PretrainedConfig):  # type: ignore[no-untyped-call]  # transformers' __init_subclass__
    """A transformers config holding one of our backbone configs' fields (see :func:`backbone_config`).

    Every field of our config is an attribute (``out_features``, ``out_indices``, ``stage_names``,
    ``hidden_sizes``, ...), as heads read them from transformers' own backbone configs. Subclasses, one
    per model type, are made by :func:`register`.
    """

    model_type = PREFIX + "base"
    backbones_model_type: ClassVar[str] = ""

    def to_backbone_config(self) -> BackboneConfig:
        """Our config (validated) from this config's fields."""
        from .._registry import get_registry

        fields = {
            key: value
            for key, value in self.to_dict().items()
            if key not in _TRANSFORMERS_ONLY and not key.startswith("_")
        }
        fields["model_type"] = self.backbones_model_type
        config_class: type[BackboneConfig] = get_registry().get(self.backbones_model_type).load_config_class()
        return config_class.from_dict(fields)


# Keys that transformers' PretrainedConfig adds to every config, which are not ours. (``output_hidden_states``,
# ``output_attentions`` and ``return_dict`` are ours too: they carry over.)
_TRANSFORMERS_ONLY = frozenset(
    {
        "model_type",
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "id2label",
        "label2id",
        "problem_type",
        "tie_word_embeddings",
        "use_return_dict",
    }
)


class _FromBackbone(Generic[_T]):
    """A read-only attribute of :class:`TransformersBackbone`: its backbone's attribute of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type) -> _FromBackbone[_T]: ...

    @overload
    def __get__(self, instance: TransformersBackbone, owner: type) -> _T: ...

    def __get__(self, instance: TransformersBackbone | None, owner: type) -> _T | _FromBackbone[_T]:
        if instance is None:
            return self
        value: _T = getattr(instance.backbone, self._name)
        return value

    def __set__(self, instance: TransformersBackbone, value: object) -> None:
        raise AttributeError(f"{self._name} is the backbone's; set it on the model's .backbone")


class TransformersBackbone(PreTrainedModel):  # type: ignore[no-untyped-call]  # transformers' __init_subclass__
    """A transformers model running one of our backbones, as ``load_backbone`` in transformers' heads builds it.

    It exposes what heads use (``channels``, ``out_features``, ``out_indices``, ``stage_names``,
    ``forward_with_filtered_kwargs``, a forward returning ``feature_maps``), and its weights have the
    backbone's own key names: it shares the backbone's submodules rather than holding it as a child.
    """

    config_class = BridgeConfig
    main_input_name = "pixel_values"
    base_model_prefix = ""
    supports_gradient_checkpointing = True

    def __init__(self, config: BridgeConfig) -> None:
        super().__init__(config)
        ours = config.to_backbone_config()
        from .._registry import get_registry

        backbone_class: type[Backbone] = get_registry().get(config.backbones_model_type).load_model_class()
        with _outside_meta_device():
            backbone = backbone_class(ours)
        # Not "_backbone": DETR takes a model with that attribute for timm's wrapper and unwraps it.
        object.__setattr__(self, "_wrapped_backbone", backbone)
        # Buffers computed in __init__ (index tables, ...) and not saved: transformers' loader replaces them
        # with empty tensors and expects _init_weights to compute them again; these are the values.
        object.__setattr__(
            self,
            "_computed_buffers",
            {
                id(module): {
                    name: buffer.detach().clone()
                    for name in module._non_persistent_buffers_set
                    if (buffer := module._buffers[name]) is not None
                }
                for module in backbone.modules()
                if module._non_persistent_buffers_set
            },
        )
        # Share the backbone's modules, parameters and buffers: the keys are the backbone's own.
        self._modules = backbone._modules
        self._parameters = backbone._parameters
        self._buffers = backbone._buffers
        self._non_persistent_buffers_set = backbone._non_persistent_buffers_set
        self.post_init()  # type: ignore[no-untyped-call]

    @property
    def backbone(self) -> Backbone:
        """The backbone this model runs."""
        backbone: Backbone = self.__dict__["_wrapped_backbone"]
        return backbone

    def _init_weights(self, module: nn.Module) -> None:
        # Called by transformers for modules a load did not fill entirely: put back the computed buffers, and
        # initialise parameters the load left missing as the backbone does (loaded ones are kept).
        computed: dict[int, dict[str, torch.Tensor]] = self.__dict__["_computed_buffers"]
        for name, value in computed.get(id(module), {}).items():
            buffer = module._buffers[name]
            if buffer is not None and buffer.device.type != "meta":
                with torch.no_grad():
                    buffer.copy_(value)
        own = list(module.parameters(recurse=False))
        if own and all(getattr(parameter, "_is_hf_initialized", False) for parameter in own):
            return
        if any(parameter.device.type == "meta" for parameter in own):
            return
        self.backbone._init_weights(module)

    # -- what transformers' heads read -------------------------------------------------------------

    stage_names: _FromBackbone[list[str]] = _FromBackbone()
    out_features: _FromBackbone[list[str]] = _FromBackbone()
    out_indices: _FromBackbone[list[int]] = _FromBackbone()
    channels: _FromBackbone[list[int]] = _FromBackbone()
    out_feature_channels: _FromBackbone[dict[str, int]] = _FromBackbone()
    num_features: _FromBackbone[list[int]] = _FromBackbone()

    def forward_with_filtered_kwargs(self, *args: Any, **kwargs: Any) -> Any:
        if not self.backbone.has_attentions:
            kwargs.pop("output_attentions", None)
        return self(*args, **kwargs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the backbone; the result is transformers' ``BackboneOutput`` (or a tuple with ``return_dict=False``)."""
        from transformers.modeling_outputs import BackboneOutput as TransformersBackboneOutput

        output = self.backbone(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions, **kwargs
        )
        if return_dict is False:
            return tuple(value for value in (output.feature_maps, output.hidden_states, output.attentions) if value)
        return TransformersBackboneOutput(
            feature_maps=output.feature_maps, hidden_states=output.hidden_states, attentions=output.attentions
        )

    def train(self, mode: bool = True) -> TransformersBackbone:
        super().train(mode)
        self.backbone.train(mode)  # frozen stages stay in evaluation mode
        return self


@contextlib.contextmanager
def _outside_meta_device() -> Any:
    """Build the backbone with real buffers under transformers' ``torch.device("meta")`` loading context.

    The backbone's index tables and other buffers computed in ``__init__`` are not in checkpoints; built
    on meta they would be lost. Parameters still go to meta (the load fills them), as our own loader does.
    """
    if torch.empty(0).device.type != "meta":
        yield
        return
    from .._loading import parameters_on_meta

    with torch.device("cpu"), parameters_on_meta():
        yield


def register(model_type: str) -> type[BridgeConfig]:
    """Register our ``model_type`` with transformers' ``AutoConfig`` and ``AutoBackbone`` (idempotent).

    Returns:
        The transformers config class, whose ``model_type`` is ``"backbones_<model_type>"``.

    Raises:
        UnknownModelTypeError: No installed plugin provides ``model_type``.
    """
    from .._registry import get_registry

    model_type = get_registry().get(model_type).model_type  # resolves aliases; unknown types raise here
    with _lock:
        if model_type in _registered:
            return _registered[model_type]
        name = PREFIX + model_type
        camel = "".join(part.capitalize() for part in model_type.replace("-", "_").split("_"))
        config_class = type(
            f"Backbones{camel}Config",
            (BridgeConfig,),
            {"model_type": name, "backbones_model_type": model_type, "__module__": __name__},
        )
        model_class = type(
            f"Backbones{camel}Backbone",
            (TransformersBackbone,),
            {"config_class": config_class, "__module__": __name__},
        )
        AutoConfig.register(name, config_class, exist_ok=True)
        TransformersAutoBackbone.register(config_class, model_class, exist_ok=True)
        _registered[model_type] = config_class
        return config_class


def register_all() -> list[str]:
    """Register every installed model type (see :func:`register`); returns their transformers model types.

    An alias (``"tipsv2"`` for ``"tipsv2_vision_model"``) shares its type's class, so each type appears once.
    """
    from .._registry import get_registry

    return [register(entry.model_type).model_type for entry in get_registry().registrations()]


def backbone_config(model_type: str, **fields: Any) -> PretrainedConfig:
    """A transformers config for our ``model_type`` that transformers' heads accept as ``backbone_config``.

    Args:
        model_type: One of our model types (``"swin"``, ``"dinat"``, a third-party plugin's, ...).
        **fields: Fields of that type's config (``out_indices``, ``embed_dim``, ...), validated as our
            config validates them.

    Returns:
        A ``PretrainedConfig`` of the class :func:`register` made for ``model_type``.

    Raises:
        UnknownModelTypeError: No installed plugin provides ``model_type``.
        ConfigError: A field is invalid (the message names it).
    """
    from .._registry import get_registry

    config_class = register(model_type)
    ours: BackboneConfig = get_registry().get(model_type).load_config_class()(**fields)
    data = {key: value for key, value in ours.to_dict().items() if key != "model_type"}
    return config_class(**data)
