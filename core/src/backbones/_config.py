"""`BackboneConfig`: the configuration contract every plugin's config extends.

A config reads and writes transformers' ``config.json`` format. Fields a plugin does not model
(``architectures``, ``id2label``, ``transformers_version``, ...) are kept as extras and written back
unchanged, so a round trip loses nothing.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError
from ._stages import align_out_features_out_indices, verify_out_features_out_indices

__all__ = ["BackboneConfig", "CONFIG_NAME", "TRANSFORMERS_CONFIG_KEYS", "config_from_file"]

CONFIG_NAME = "config.json"

# The RT-DETR / D-FINE family's freezing fields, kept as config.json fields and applied by the backbone.
FREEZE_KEYS = ("freeze_at", "freeze_stem_only", "freeze_norm")

# Keys that are derived (never read back) or handled by the output-stage logic.
_DERIVED_KEYS = ("stage_names", "out_features", "out_indices", "_out_features", "_out_indices")

TRANSFORMERS_CONFIG_KEYS = frozenset(
    {
        # transformers' PretrainedConfig (4.x and 5.x): bookkeeping, task heads, text generation.
        "architectures", "transformers_version", "dtype", "torch_dtype", "use_bfloat16", "torchscript",
        "id2label", "label2id", "num_labels", "problem_type", "finetuning_task", "task_specific_params",
        "tokenizer_class", "prefix", "bos_token_id", "pad_token_id", "eos_token_id", "sep_token_id",
        "decoder_start_token_id", "is_encoder_decoder", "is_decoder", "add_cross_attention",
        "cross_attention_hidden_size", "tie_encoder_decoder", "tie_word_embeddings", "chunk_size_feed_forward",
        "pruned_heads", "tf_legacy_loss", "use_return_dict", "quantization_config", "attn_implementation",
        "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
        "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
        "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
        "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
        "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
        "begin_suppress_tokens", "auto_map", "custom_pipelines",
        # transformers' backbone API (BackboneConfigMixin and the configs that nest a backbone).
        "backbone", "backbone_config", "backbone_kwargs", "use_timm_backbone", "use_pretrained_backbone",
        # The RT-DETR family's freezing fields: any config may carry them (see detection_freezing).
        *FREEZE_KEYS,
    }
)  # fmt: skip
"""``config.json`` keys that are never reported as unknown, whatever the architecture: those of
transformers' ``PretrainedConfig`` and of its backbone API. Keys starting with ``_`` (transformers'
bookkeeping, e.g. ``_name_or_path``) are never unknown either; an architecture adds its reference config's
unused keys with :attr:`BackboneConfig.reference_config_keys`."""


def _nearest(name: str, candidates: list[str]) -> str:
    """The candidate spelt most like ``name`` (difflib's ratio; shared words weigh most)."""
    words = set(name.split("_"))

    def score(candidate: str) -> tuple[float, float]:
        shared = len(words & set(candidate.split("_"))) / max(len(words), 1)
        return shared, difflib.SequenceMatcher(None, name, candidate).ratio()

    return max(candidates, key=score)


def _config_error(class_name: str, error: ValidationError) -> ConfigError:
    """One readable line per invalid field, instead of pydantic's multi-line report."""
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{field}={item.get('input')!r}: {message}")
    return ConfigError(f"invalid {class_name}: " + "; ".join(problems))


class BackboneConfig(BaseModel):
    """Base configuration of a backbone.

    Subclasses declare ``model_type`` (a class variable), their architecture fields (pydantic fields)
    and the ``stage_names`` property. ``out_features`` and ``out_indices`` follow transformers'
    alignment rules (see :func:`backbones.align_out_features_out_indices`); assigning one re-aligns
    the other.

    Example:
        >>> cfg = SwinConfig(depths=[2, 2], out_indices=[-1])   # doctest: +SKIP
        >>> cfg.out_features                                    # doctest: +SKIP
        ['stage2']
    """

    model_config = ConfigDict(
        extra="allow",
        validate_assignment=True,
        protected_namespaces=(),
        arbitrary_types_allowed=False,
    )

    model_type: ClassVar[str] = ""
    """The ``model_type`` written to and expected in ``config.json``."""

    _selection_keys: ClassVar[tuple[str, ...]] = ("_out_features", "_out_indices")
    """Instance ``__dict__`` entries that hold the selection (never fields, never written to config.json)."""

    reference_config_keys: ClassVar[frozenset[str]] = frozenset()
    """Keys the reference implementation's config (transformers') writes to ``config.json`` that this
    architecture does not read (a task head's fields, values derived from other fields). They are kept
    for the round trip like any extra, and never reported by :meth:`unknown_fields`."""

    derived_config_keys: ClassVar[tuple[str, ...]] = ()
    """Properties :meth:`to_dict` writes to ``config.json`` beside the fields, as the reference implementation
    writes them (values derived from fields, e.g. Swin's ``hidden_size``), so that tools reading the file
    directly find them. Each is the property's current value: a stale copy read from a file is replaced."""

    output_hidden_states: bool = False
    """Default of the forward's ``output_hidden_states``."""
    output_attentions: bool = False
    """Default of the forward's ``output_attentions``."""
    return_dict: bool = True
    """Default of the forward's ``return_dict``."""
    output_prefix_tokens: bool = False
    """Default of the forward's ``output_prefix_tokens`` (backbones with class or register tokens only)."""

    # The selection (_out_features, _out_indices) lives in the instance __dict__, set with
    # object.__setattr__, and is not annotated here: pydantic would make annotated underscore names
    # private attributes, read through its __getattr__, which torch.compile cannot trace.

    def __init__(self, /, **data: Any) -> None:
        out_features = data.pop("out_features", data.pop("_out_features", None))
        out_indices = data.pop("out_indices", data.pop("_out_indices", None))
        data.pop("stage_names", None)
        given_type = data.pop("model_type", None)
        if given_type is not None and self.model_type and given_type != self.model_type:
            raise ConfigError(
                f"{type(self).__name__} is for model_type {self.model_type!r}, but the config says "
                f"{given_type!r}; use AutoBackboneConfig to pick the right class"
            )
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise _config_error(type(self).__name__, error) from None
        self.set_out_features_out_indices(out_features, out_indices)
        self.detection_freezing  # noqa: B018 -- validates the freezing fields now, not at build time

    @property
    def detection_freezing(self) -> tuple[int, bool, bool]:
        """The RT-DETR family's freezing fields as ``(freeze_at, freeze_stem_only, freeze_norm)``.

        ``freeze_at`` (default -1, nothing frozen): from ``k >= 0`` on, the stem and the first stages are
        frozen, how many is the backbone's convention (see :attr:`backbones.Backbone.freeze_at_extra_stages`);
        ``freeze_stem_only`` (default False) freezes only the stem whatever ``freeze_at``; ``freeze_norm``
        (default False) replaces every BatchNorm by a frozen one. Any config may carry them; they are kept in
        ``config.json`` as given and applied when the backbone is built or loaded.

        Raises:
            ConfigError: A field has a value the RT-DETR family does not define.
        """
        values = {key: getattr(self, key, None) for key in FREEZE_KEYS}
        freeze_at = -1 if values["freeze_at"] is None else values["freeze_at"]
        valid = not isinstance(freeze_at, bool) and isinstance(freeze_at, int) and freeze_at >= -1
        if valid and freeze_at > 0:
            valid = freeze_at < len(self.stage_names)
        if not valid:
            raise ConfigError(
                f"invalid {type(self).__name__}: freeze_at={values['freeze_at']!r}: must be an int between -1 "
                f"(freeze nothing) and {len(self.stage_names) - 1} (the stages after the stem); k >= 0 freezes the "
                "stem and the first stages, as RT-DETR's freeze_at"
            )
        flags = []
        for key in ("freeze_stem_only", "freeze_norm"):
            value = False if values[key] is None else values[key]
            if not isinstance(value, bool):
                raise ConfigError(f"invalid {type(self).__name__}: {key}={value!r}: must be true or false")
            flags.append(value)
        return freeze_at, flags[0], flags[1]

    def unknown_fields(self) -> dict[str, str]:
        """Extra keys that no code reads: neither a field, nor a key of transformers' configs
        (:data:`TRANSFORMERS_CONFIG_KEYS`, keys starting with ``_``), nor one of :attr:`reference_config_keys`.

        They are kept and written back (as transformers does), but a misspelt or unsupported field has no
        effect, so loading reports them. A config whose extras are arguments of something else (timm's
        ``create_model``) overrides this.

        Returns:
            Each unknown key, in the order given, with the nearest field name (its likely intended spelling).
        """
        known = {*type(self).model_fields, *TRANSFORMERS_CONFIG_KEYS, *type(self).reference_config_keys}
        candidates = sorted({*type(self).model_fields, "out_features", "out_indices"})
        return {
            key: _nearest(key, candidates)
            for key in (self.model_extra or {})
            if key not in known and not key.startswith("_")
        }

    # -- stages -----------------------------------------------------------------------------------

    @property
    def stage_names(self) -> list[str]:
        """Names of every stage, shallowest first (e.g. ``["stem", "stage1", ...]``)."""
        raise NotImplementedError(f"{type(self).__name__} must define the stage_names property")

    @property
    def out_features(self) -> list[str]:
        """Names of the stages whose feature maps the backbone returns."""
        return list(self.__dict__["_out_features"])

    @out_features.setter
    def out_features(self, value: list[str] | None) -> None:
        self.set_out_features_out_indices(value, None)

    @property
    def out_indices(self) -> list[int]:
        """Indices (into ``stage_names``; negative allowed) of the returned stages."""
        return list(self.__dict__["_out_indices"])

    @out_indices.setter
    def out_indices(self, value: list[int] | tuple[int, ...] | None) -> None:
        self.set_out_features_out_indices(None, value)

    def set_out_features_out_indices(
        self,
        out_features: list[str] | None,
        out_indices: list[int] | tuple[int, ...] | None,
    ) -> None:
        """Validate, align and store the output stages (transformers' ``set_output_features_output_indices``).

        ``out_features`` must be a list; ``out_indices`` may be a tuple and is stored as a list.

        Raises:
            ValueError: When the values are invalid for this config's ``stage_names`` (see
                :func:`backbones.verify_out_features_out_indices`).
        """
        self._store_selection(*align_out_features_out_indices(out_features, out_indices, self.stage_names))

    def set_output_features_output_indices(
        self,
        out_features: list[str] | None,
        out_indices: list[int] | tuple[int, ...] | None,
    ) -> None:
        """transformers' name of :meth:`set_out_features_out_indices` (same rules)."""
        self.set_out_features_out_indices(out_features, out_indices)

    def verify_out_features_out_indices(self) -> None:
        """Check the stored selection against ``stage_names`` (transformers' method of this name).

        The selection is checked whenever it or the architecture changes, so this only fails for a
        config whose selection was written around the public setters.

        Raises:
            ValueError: The stored ``out_features`` / ``out_indices`` are invalid for ``stage_names``.
        """
        verify_out_features_out_indices(self.__dict__["_out_features"], self.__dict__["_out_indices"], self.stage_names)

    def _assign_stage_names(self, value: Any) -> None:
        """``config.stage_names = value``: transformers' code assigns it; ours follow from the architecture.

        ``None`` or the config's own stage names are accepted and change nothing; other names are refused.
        """
        if value is None:
            return
        names = list(value) if isinstance(value, (list, tuple)) else value
        if names != self.stage_names:
            raise ValueError(
                f"stage_names of a {type(self).__name__} follow from its architecture fields and are "
                f"{self.stage_names}; cannot set them to {value!r}: change the architecture fields instead"
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "stage_names":
            self._assign_stage_names(value)
            return
        # pydantic routes assignments through its own machinery; properties with setters go here.
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
            return
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        # Fields, and extras too: pydantic rebuilds __dict__ for either, and an extra may be architecture
        # (a timm argument of timm_backbone).
        is_field = name in type(self).model_fields
        missing = object()
        previous = getattr(self, name) if is_field else (self.model_extra or {}).get(name, missing)
        selection = {key: self.__dict__[key] for key in self._selection_keys if key in self.__dict__}
        features, indices = selection["_out_features"], selection["_out_indices"]
        try:
            super().__setattr__(name, value)  # pydantic rebuilds __dict__ from the fields
        except ValidationError as error:
            # A model-level validator fails after pydantic wrote the value: put the old one back.
            self._restore(name, is_field, previous, missing)
            self.__dict__.update(selection)
            raise _config_error(type(self).__name__, error) from None
        finally:
            self._drop_selection_extras()
            self.__dict__.update(selection)
        try:
            self._realign_selection(features, indices)
            if name in FREEZE_KEYS:
                self.detection_freezing  # noqa: B018 -- validates the new value
        except ValueError:
            self._restore(name, is_field, previous, missing)
            self._store_selection(features, indices)
            raise

    def _realign_selection(self, features: list[str], indices: list[int]) -> None:
        """After a field changed: an architecture change may change the stages, so keep the selection
        valid (the indices are kept, the names follow) or say why not."""
        self.set_out_features_out_indices(None, indices)

    def _restore(self, name: str, is_field: bool, previous: Any, missing: object) -> None:
        if is_field:
            self.__dict__[name] = previous
        elif previous is missing:
            (self.model_extra or {}).pop(name, None)
        else:
            (self.model_extra or {})[name] = previous

    def _drop_selection_extras(self) -> None:
        # On assignment pydantic validates __dict__ again and files the private selection keys as extras:
        # a stale copy that to_dict() would write to config.json. The live selection stays in __dict__.
        extra = self.model_extra
        if extra is not None:
            for key in self._selection_keys:
                extra.pop(key, None)

    def _store_selection(self, features: list[str], indices: list[int]) -> None:
        object.__setattr__(self, "_out_features", features)
        object.__setattr__(self, "_out_indices", indices)

    # -- serialisation ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the ``config.json`` dictionary (transformers' format), extras included."""
        data: dict[str, Any] = {"model_type": self.model_type}
        data.update(self.model_dump(mode="json"))
        for key in self.derived_config_keys:
            data[key] = getattr(self, key)
        data["stage_names"] = self.stage_names
        data["out_features"] = self.out_features
        data["out_indices"] = self.out_indices
        return data

    def to_json_string(self) -> str:
        """Return :meth:`to_dict` as indented, key-sorted JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` to ``path`` atomically (a temporary file, then a rename)."""
        from ._files import atomic_write_text

        atomic_write_text(Path(path), self.to_json_string())

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` into ``directory`` (created if needed) and return its path."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_json_file(path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> BackboneConfig:
        """Build a config from a ``config.json`` dictionary; ``overrides`` replace its values.

        Raises:
            ConfigError: When ``model_type`` names another architecture.
            ValueError: When a field or the output stages are invalid (pydantic's message says which).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object (dict), got {type(data).__name__}")
        merged = {key: value for key, value in data.items() if key not in _DERIVED_KEYS}
        if "out_features" in overrides or "out_indices" in overrides:
            # An explicit choice replaces both saved values, or they could disagree.
            merged.update(overrides)
        else:
            merged["out_features"] = data.get("out_features", data.get("_out_features"))
            merged["out_indices"] = data.get("out_indices", data.get("_out_indices"))
            merged.update(overrides)
        return cls(**merged)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str], **overrides: Any) -> BackboneConfig:
        """Read a ``config.json`` file (see :meth:`from_dict`)."""
        from ._files import read_json

        return config_from_file(cls, read_json(Path(path)), Path(path), **overrides)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], **kwargs: Any) -> BackboneConfig:
        """Read ``config.json`` from a local directory or a hub repository id.

        Args:
            name_or_path: A directory holding ``config.json``, or a hub id such as ``"org/name"``.
            **kwargs: Hub options (``revision``, ``cache_dir``, ``local_files_only``, ``token``) and
                field overrides.
        """
        from ._hub import HUB_OPTIONS, resolve_file

        hub = {key: kwargs.pop(key) for key in list(kwargs) if key in HUB_OPTIONS}
        path = resolve_file(name_or_path, CONFIG_NAME, **hub)
        assert path is not None  # only optional look-ups return None
        return cls.from_json_file(path, **kwargs)

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self.to_dict().items() if key != "model_type")
        return f"{type(self).__name__}({fields})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BackboneConfig):
            return NotImplemented
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


MAX_CONFIG_NUMBER = 1 << 16
"""Largest magnitude a number in a config file may have (65536).

No real backbone comes near it (widths stay below 16k, depths below 100, image sizes below 8k), while a
corrupt or hostile ``config.json`` (``"depths": [1000000000]``) would otherwise make building the model
take hours or try to allocate terabytes. Checked on the fields of configs read from files.
"""


def _implausible_number(value: Any, where: str) -> str | None:
    """``where`` (extended with list indices) of the first number that no real architecture has, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where}={value!r} is not a finite number"
        if abs(value) > MAX_CONFIG_NUMBER:
            return f"{where}={value!r} is beyond any real architecture (limit: magnitude {MAX_CONFIG_NUMBER})"
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _implausible_number(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


def check_plausible_sizes(config: BackboneConfig, source: object) -> None:
    """Reject a config whose fields hold absurd numbers, before anything is built from it.

    Raises:
        ConfigError: Naming the field, its value and the limit (:data:`MAX_CONFIG_NUMBER`).
    """
    for name in type(config).model_fields:
        found = _implausible_number(getattr(config, name, None), name)
        if found is not None:
            raise ConfigError(
                f"invalid backbone config in {source}: {found}; the file is corrupt or not this architecture's config"
            )


def config_from_file(
    config_class: type[BackboneConfig], data: dict[str, Any], source: Path, **overrides: Any
) -> BackboneConfig:
    """``config_class.from_dict(data)``, with any rejection re-raised naming the file it came from.

    Raises:
        ConfigError: The values are invalid for ``config_class``, or absurd (see :func:`check_plausible_sizes`).
    """
    try:
        config = config_class.from_dict(data, **overrides)
    except ValueError as error:
        raise ConfigError(f"invalid backbone config in {source}: {error}") from error
    check_plausible_sizes(config, source)
    return config
