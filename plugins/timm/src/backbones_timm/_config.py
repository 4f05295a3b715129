"""Configuration of a timm backbone. Field names and meanings follow transformers' TimmBackboneConfig.

The stages of a timm model are only known to timm, so ``stage_names`` builds the model once, on the
meta device and without weights, and reads its ``feature_info`` (cached per model name and arguments).
This module imports neither torch nor timm: they are imported on the first ``stage_names`` lookup.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from backbones import BackboneConfig, ConfigError, align_out_features_out_indices

__all__ = ["NOT_TIMM_KWARGS", "RESERVED_TIMM_KWARGS", "TimmBackboneConfig"]

_OWN_ARGUMENTS = ("features_only", "in_chans", "num_channels", "out_features", "out_indices", "output_stride")
"""Arguments this config models itself: ``backbone_kwargs`` cannot set them (set the config field)."""

NOT_TIMM_KWARGS = frozenset(
    {
        # Written by transformers' PretrainedConfig (4.x and 5.x) and by head configs: bookkeeping, never
        # architecture, so they are kept and written back but not passed to timm.create_model.
        "add_cross_attention",
        "architectures",
        "backbone_kwargs",
        "bad_words_ids",
        "begin_suppress_tokens",
        "bos_token_id",
        "chunk_size_feed_forward",
        "cross_attention_hidden_size",
        "decoder_start_token_id",
        "diversity_penalty",
        "do_sample",
        "dtype",
        "early_stopping",
        "encoder_no_repeat_ngram_size",
        "eos_token_id",
        "exponential_decay_length_penalty",
        "finetuning_task",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "id2label",
        "is_decoder",
        "is_encoder_decoder",
        "label2id",
        "length_penalty",
        "max_length",
        "min_length",
        "no_repeat_ngram_size",
        "num_beam_groups",
        "num_beams",
        "num_labels",
        "num_return_sequences",
        "output_scores",
        "pad_token_id",
        "prefix",
        "problem_type",
        "pruned_heads",
        "remove_invalid_values",
        "repetition_penalty",
        "return_dict_in_generate",
        "sep_token_id",
        "suppress_tokens",
        "task_specific_params",
        "temperature",
        "tf_legacy_loss",
        "tie_encoder_decoder",
        "tie_word_embeddings",
        "tokenizer_class",
        "top_k",
        "top_p",
        "torch_dtype",
        "torchscript",
        "transformers_version",
        "typical_p",
        "use_bfloat16",
        "use_timm_backbone",
    }
)
"""Extra ``config.json`` keys never forwarded to ``timm.create_model`` (nor keys starting with ``_``), even when
the timm model has a parameter of that name (timm models take ``dtype``; transformers writes it as bookkeeping)."""

RESERVED_TIMM_KWARGS: dict[str, str] = {
    # timm.create_model arguments this plugin sets itself, with what to use instead.
    "pretrained": "set use_pretrained_backbone instead",
    "feature_cfg": "this plugin builds the feature extractor itself",
    "checkpoint_path": (
        "to start from a local weights file set use_pretrained_backbone=True and "
        "pretrained_cfg_overlay={'file': '/path/to/weights.safetensors'}"
    ),
    "device": "build the backbone, then move it with .to(device)",
}
"""``timm.create_model`` arguments that cannot be given as extra config fields, and why."""


class TimmBackboneConfig(BackboneConfig):
    """Configuration of a backbone wrapping a timm model (transformers' ``TimmBackboneConfig``).

    The stages are the entries of the timm model's ``feature_info``, named after their modules (e.g.
    ``["act1", "layer1", "layer2", "layer3", "layer4"]`` for ``resnet50``).

    Extra keywords are kept and saved in ``config.json``. Those timm documents for the model are passed
    to ``timm.create_model``: ``create_model``'s own (``drop_path_rate``, ``pretrained_cfg_overlay``, ...)
    and the parameters of the model class (``img_size``, ``depth``, ...), except transformers'
    bookkeeping keys (:data:`NOT_TIMM_KWARGS`). Others (``image_size``, ``hidden_size``, ... that
    transformers' configs carry) are kept but not passed, as transformers does. The entries of an extra
    ``backbone_kwargs`` dict are always passed. ``in_chans`` is accepted as another name of
    ``num_channels``.

    Without ``out_indices`` the last stage is selected as ``[-1]`` (transformers' default), also when
    ``out_features`` names just the last stage. ``TimmBackboneConfig()`` constructs, as in transformers:
    until ``backbone`` is set the selection is kept unchecked and building a model raises.

    Args:
        backbone: The timm model: a registry name (``"resnet50"``, ``"convnext_tiny.fb_in22k"``), a hub
            id (``"hf-hub:timm/resnet50.a1_in1k"``) or a local folder (``"local-dir:/path/to/model"``);
            ``None`` until set.
        num_channels: Channels of the input images (timm's ``in_chans``).
        features_only: Build timm's feature extractor (``features_only=True``, transformers' default);
            if false, the whole classification model is built and its ``forward_intermediates`` used.
        use_pretrained_backbone: Load timm's pretrained weights when the backbone is built from this
            config (never when a checkpoint is being loaded into it).
        freeze_batch_norm_2d: Replace every BatchNorm2d by a frozen BatchNorm (fixed statistics and
            affine values, in training mode too).
        output_stride: Output stride of the last stage (8 or 16 dilate the deeper stages; ``None``
            keeps the model's own).
    """

    model_type: ClassVar[str] = "timm_backbone"

    backbone: str | None = None
    num_channels: int = 3
    features_only: bool = True
    use_pretrained_backbone: bool = False
    freeze_batch_norm_2d: bool = False
    output_stride: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _timm_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "in_chans" in data:
            data = dict(data)
            in_chans = data.pop("in_chans")
            if "num_channels" in data and data["num_channels"] != in_chans:
                raise ValueError(
                    f"in_chans={in_chans!r} and num_channels={data['num_channels']!r} disagree; "
                    "set only num_channels (in_chans is timm's name for it)"
                )
            data["num_channels"] = in_chans
        reserved = sorted(set(data) & set(RESERVED_TIMM_KWARGS))
        if reserved:
            reasons = "; ".join(f"{name}: {RESERVED_TIMM_KWARGS[name]}" for name in reserved)
            raise ValueError(f"{reserved} cannot be passed to timm.create_model through the config ({reasons})")
        explicit = data.get("backbone_kwargs")
        if explicit is not None:
            if not isinstance(explicit, dict):
                raise ValueError(f"backbone_kwargs must be a dict of timm.create_model arguments, got {explicit!r}")
            bad = sorted(set(explicit) & {*RESERVED_TIMM_KWARGS, *_OWN_ARGUMENTS})
            if bad:
                raise ValueError(
                    f"backbone_kwargs cannot set {bad}: set the config fields (num_channels, features_only, "
                    "output_stride, out_indices, use_pretrained_backbone) instead"
                )
        return data

    @field_validator("backbone")
    @classmethod
    def _non_empty_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("backbone must name a timm model (e.g. 'resnet50'), got an empty string")
        return value.strip()

    @field_validator("num_channels")
    @classmethod
    def _positive_channels(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"num_channels must be a positive integer, got {value}")
        return value

    @field_validator("output_stride")
    @classmethod
    def _positive_stride(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"output_stride must be a positive integer (typically 8, 16 or 32) or None, got {value}")
        return value

    @model_validator(mode="after")
    def _extras_are_json(self) -> TimmBackboneConfig:
        for key, value in (self.model_extra or {}).items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"extra field {key}={value!r} is not a JSON value, but config.json must hold it; "
                    "pass timm a name instead (e.g. act_layer='gelu')"
                ) from None
        return self

    def __init__(self, /, **data: Any) -> None:
        declared = data.get("stage_names")
        super().__init__(**data)
        if declared is not None and self.backbone is not None:
            self._assign_stage_names(declared)

    def unknown_fields(self) -> dict[str, str]:
        """None: every extra field is a ``timm.create_model`` argument (see the class docstring), which timm checks."""
        return {}

    @property
    def timm_kwargs(self) -> dict[str, Any]:
        """The extra fields passed to ``timm.create_model`` (see the class docstring), as JSON values.

        They go through JSON (tuples become lists) so a model built from this config and one built from
        its saved ``config.json`` get the same arguments. Empty while ``backbone`` is unset.
        """
        if self.backbone is None:
            return {}
        from ._timm import model_arguments

        documented = model_arguments(self.backbone)
        extra = self.model_extra or {}
        kwargs = {
            key: value
            for key, value in extra.items()
            if key in documented and not key.startswith("_") and key not in NOT_TIMM_KWARGS and value is not None
        }
        kwargs.update(extra.get("backbone_kwargs") or {})
        return json.loads(json.dumps(kwargs))

    def _architecture_key(self) -> tuple[str, bool, int, int | None, str]:
        """What the stages depend on, hashable (the extra kwargs as canonical JSON)."""
        if self.backbone is None:
            raise ConfigError(
                "TimmBackboneConfig.backbone is not set, so the timm model and its stages are unknown: set it "
                "to a timm model name (e.g. 'resnet50'), 'hf-hub:<org>/<name>' or 'local-dir:<folder>'"
            )
        kwargs = json.dumps(self.timm_kwargs, sort_keys=True)
        return (self.backbone, self.features_only, self.num_channels, self.output_stride, kwargs)

    @property
    def feature_spec(self) -> Any:
        """The timm model's stages: ``names``, ``channels`` and ``reductions`` (a ``FeatureSpec``).

        Raises:
            ConfigError: The model name is unknown (the message lists close matches) or timm rejects an
                argument.
            CheckpointError: A ``hf-hub:`` model's config cannot be fetched.
        """
        from ._timm import describe_features

        return describe_features(*self._architecture_key())

    @property
    def stage_names(self) -> list[str]:
        """The module names of the timm model's ``feature_info`` entries (builds it on meta, once).

        Raises:
            ConfigError: ``backbone`` is not set, or timm cannot build it (see :attr:`feature_spec`).
        """
        return list(self.feature_spec.names)

    # -- the selection: transformers' TimmBackboneConfig rules ----------------------------------------

    _selection_keys: ClassVar[tuple[str, ...]] = ("_out_features", "_out_indices", "_selection_deferred")

    @property
    def out_features(self) -> list[str]:
        """Names of the returned stages (see :attr:`backbones.BackboneConfig.out_features`).

        Raises:
            ConfigError: ``backbone`` is not set and ``out_features`` was not given, so they are unknown.
        """
        return list(self._selected("_out_features"))

    @out_features.setter
    def out_features(self, value: list[str] | None) -> None:
        self.set_out_features_out_indices(value, None)

    @property
    def out_indices(self) -> list[int]:
        """Indices of the returned stages; ``[-1]`` unless chosen (transformers' default).

        Raises:
            ConfigError: ``backbone`` is not set and only ``out_features`` was given.
        """
        return list(self._selected("_out_indices"))

    @out_indices.setter
    def out_indices(self, value: list[int] | tuple[int, ...] | None) -> None:
        self.set_out_features_out_indices(None, value)

    def _selected(self, key: str) -> list[Any]:
        value = self.__dict__[key]
        if value is None:
            raise ConfigError(
                f"{key.lstrip('_')} of a TimmBackboneConfig without a backbone is not known yet (the stages "
                "come from the timm model): set backbone first"
            )
        return list(value)

    def set_out_features_out_indices(
        self,
        out_features: list[str] | None,
        out_indices: list[int] | tuple[int, ...] | None,
    ) -> None:
        """Validate, align and store the output stages; unset ``out_indices`` means ``[-1]``.

        Without a ``backbone`` the values are kept as given, unchecked (as transformers keeps them until
        the model is built), and checked when ``backbone`` is set.

        Raises:
            ValueError: When the values are invalid for this config's ``stage_names``.
        """
        indices = list(out_indices) if isinstance(out_indices, tuple) else out_indices
        if self.backbone is None:
            if out_features is None and indices is None:
                indices = [-1]
            object.__setattr__(self, "_selection_deferred", True)
            self._store_selection(out_features, indices)  # type: ignore[arg-type]  # checked once backbone is set
            return
        names = self.stage_names
        features, indices = align_out_features_out_indices(out_features, indices, names)
        if out_indices is None and len(indices) == 1 and indices[0] % len(names) == len(names) - 1:
            # transformers' default, also for a checkpoint whose config.json names the last stage without
            # saying out_indices: [-1] rather than the equal [len(stage_names) - 1].
            indices = [-1]
        object.__setattr__(self, "_selection_deferred", False)
        self._store_selection(features, indices)

    def _realign_selection(self, features: list[str], indices: list[int]) -> None:
        if self.__dict__.get("_selection_deferred"):
            # backbone was just set: check the selection that was kept as given.
            self.set_out_features_out_indices(features, indices)
        else:
            super()._realign_selection(features, indices)

    def _assign_stage_names(self, value: Any) -> None:
        # Without a model the stages are unknown; transformers checks assigned names when the model is built.
        if self.backbone is not None:
            super()._assign_stage_names(value)

    def to_dict(self) -> dict[str, Any]:
        if self.backbone is not None:
            return super().to_dict()
        # As transformers writes a config without a model: no stage_names, the selection as given.
        data: dict[str, Any] = {"model_type": self.model_type}
        data.update(self.model_dump(mode="json"))
        data["out_features"] = self.__dict__["_out_features"]
        data["out_indices"] = self.__dict__["_out_indices"]
        return data
