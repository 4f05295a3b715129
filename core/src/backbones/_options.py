"""`LoadOptions`: every option of ``from_pretrained``, declared once.

``AutoBackbone.from_pretrained``, ``Backbone.from_pretrained``, ``load_backbone`` (``backbone_kwargs``),
the ``backbones`` command and the ``load_backbone_from_name`` hook all pass one :class:`LoadOptions`
down; config-field overrides travel beside it as a separate mapping. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MAX_PARAMETERS", "MAX_PARAMETERS_ENV", "LoadOptions", "check_config_overrides", "parameter_limit"]

# transformers' names for options that are spelt differently here.
_OTHER_NAMES = {"torch_dtype": "dtype", "use_auth_token": "token"}

_TYPO_CUTOFF = 0.8
"""Similarity (difflib's ratio) from which a keyword is taken for a misspelt option: it catches ``dtpye``,
``revison`` and ``out_index``, and no field of any plugin's config nor any common timm argument."""


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """How to load a checkpoint: where from, onto what, how strictly, and what to return.

    Each field is also a keyword argument of :meth:`backbones.AutoBackbone.from_pretrained`,
    :meth:`backbones.Backbone.from_pretrained` and of ``backbone_kwargs`` in :func:`backbones.load_backbone`,
    so ``from_pretrained(name, dtype="bfloat16")`` and
    ``from_pretrained(name, load_options=LoadOptions(dtype="bfloat16"))`` are the same call. Any other
    keyword argument of those is a config-field override, not a load option.

    Raises:
        TypeError: An unknown option (the message names the valid ones) or a value of the wrong type.

    Example:
        >>> from backbones import AutoBackbone, LoadOptions                  # doctest: +SKIP
        >>> options = LoadOptions(dtype="bfloat16", local_files_only=True)    # doctest: +SKIP
        >>> AutoBackbone.from_pretrained("org/name", load_options=options)    # doctest: +SKIP
    """

    out_indices: Sequence[int] | None = None
    """Stages to output, by index into ``stage_names`` (negative allowed); replaces the saved selection."""
    out_features: Sequence[str] | None = None
    """Stages to output, by name; replaces the saved selection."""
    revision: str | None = None
    """Hub branch, tag or commit (default ``"main"``)."""
    cache_dir: str | os.PathLike[str] | None = None
    """Hub cache directory (default: huggingface_hub's)."""
    local_files_only: bool = False
    """Never use the network: a hub file must already be in the cache."""
    token: str | bool | None = field(default=None, repr=False)
    """Hub token, for private or gated repositories (never shown in the options' repr)."""
    force_download: bool = False
    """Download hub files even if they are cached."""
    dtype: torch.dtype | str | None = None
    """Floating dtype of the parameters (default float32; ``"auto"`` keeps the checkpoint's)."""
    device: torch.device | str | None = None
    """Device to load onto (default CPU)."""
    strict: bool = False
    """Raise if any model key is missing from the checkpoint or any checkpoint key is unused."""
    allow_pickle: bool = False
    """Accept a ``pytorch_model.bin`` (loaded with ``torch.load(weights_only=True)``); refused otherwise."""
    checkpoint_prefix: str = ""
    """Load only the checkpoint keys under this prefix (a backbone inside a bigger model, e.g.
    ``"model.pixel_level_module.encoder."``)."""
    config_key: str | None = None
    """Read the backbone config from this key of ``config.json`` (e.g. ``"backbone_config"``)."""
    output_loading_info: bool = False
    """Return ``(model, LoadReport)`` instead of the model."""
    use_timm_backbone: bool = False
    """Ask the plugins that load names (``backbones-timm``) before looking for a checkpoint, as
    transformers' flag of that name does."""
    max_parameters: int | None = None
    """Refuse a config whose model would have more parameters than this (default: the environment
    variable ``BACKBONES_MAX_PARAMETERS``, else 20 billion); counted on the meta device before anything is
    allocated (see ``docs/security.md``)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> LoadOptions:
        # Runs before the generated __init__, so an unknown keyword gets the list of valid ones.
        unknown = sorted(set(kwargs) - option_names())
        if unknown:
            raise TypeError(unknown_options_message(unknown))
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for name in ("local_files_only", "force_download", "strict", "allow_pickle", "output_loading_info"):
            _require(name, getattr(self, name), bool, "True or False")
        _require("use_timm_backbone", self.use_timm_backbone, bool, "True or False")
        _require("checkpoint_prefix", self.checkpoint_prefix, str, "a string (e.g. 'model.encoder.')")
        if self.max_parameters is not None:
            _check_parameter_limit(self.max_parameters, "max_parameters")
        for name in ("revision", "config_key"):
            value = getattr(self, name)
            if value is not None:
                _require(name, value, str, "a string or None")
        if self.token is not None and not isinstance(self.token, (str, bool)):
            raise TypeError(f"token must be a string, a bool or None, got {type(self.token).__name__}")
        # Lists become tuples, so the options really are immutable (and hashable).
        object.__setattr__(self, "out_indices", _as_tuple(self.out_indices))
        object.__setattr__(self, "out_features", _as_tuple(self.out_features))

    @classmethod
    def split(cls, kwargs: Mapping[str, Any], *, base: LoadOptions | None = None) -> tuple[LoadOptions, dict[str, Any]]:
        """Separate load options from config overrides.

        Args:
            kwargs: Keyword arguments of ``from_pretrained``: load options and config overrides.
            base: Options that ``kwargs`` add to or replace (default: every option at its default).

        Returns:
            ``(options, config_overrides)``.
        """
        names = option_names()
        chosen = {key: value for key, value in kwargs.items() if key in names}
        overrides = {key: value for key, value in kwargs.items() if key not in names}
        options = base if base is not None else cls()
        if not isinstance(options, LoadOptions):
            raise TypeError(f"load_options must be a backbones.LoadOptions, got {type(options).__name__}")
        return (dataclasses.replace(options, **chosen) if chosen else options), overrides

    @staticmethod
    def check_config_overrides(overrides: Mapping[str, Any], accepted: Collection[str] = ()) -> None:
        """Reject config overrides that look like misspelt load options.

        A keyword that is not a load option is a config override: a field of the config, or an extra
        that the config keeps as an attribute (as transformers' configs do). One that is no field of
        the config (``accepted``) but is within a typo of a load option's name (``revison``,
        ``local_file_only``), or is transformers' other name for one (``torch_dtype``), is taken for the
        misspelt option it most likely is.

        Args:
            overrides: The config overrides.
            accepted: Names that are fine whatever they look like (the config's fields).

        Raises:
            TypeError: Naming the keyword, the option it resembles, and every load option.
        """
        check_config_overrides(overrides, accepted)

    def replace(self, **changes: Any) -> LoadOptions:
        """A copy with ``changes`` applied (the options are frozen)."""
        return dataclasses.replace(self, **changes)

    def hub_kwargs(self) -> dict[str, Any]:
        """The hub options, as keyword arguments of huggingface_hub-style look-ups."""
        return {name: getattr(self, name) for name in HUB_OPTION_NAMES}

    def selection(self) -> dict[str, Any]:
        """``out_indices`` and ``out_features`` as config overrides (only those that are set)."""
        return {
            name: list(value) for name in ("out_indices", "out_features") if (value := getattr(self, name)) is not None
        }

    def as_dict(self) -> dict[str, Any]:
        """Every option by name (sequences as lists)."""
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


HUB_OPTION_NAMES = ("revision", "cache_dir", "local_files_only", "token", "force_download")
"""The options that say where hub files come from (passed to every file look-up)."""

_OPTION_NAMES = frozenset(item.name for item in dataclasses.fields(LoadOptions))


def option_names() -> frozenset[str]:
    """The names of every load option."""
    return _OPTION_NAMES


def unknown_options_message(unknown: Sequence[str]) -> str:
    """Why ``unknown`` are not load options, with a likely fix and the list of valid ones."""
    hints = []
    for name in unknown:
        guess = _OTHER_NAMES.get(name) or next(iter(difflib.get_close_matches(name, _OPTION_NAMES, n=1)), None)
        hints.append(f"{name!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    noun = "option" if len(unknown) == 1 else "options"
    return f"unknown load {noun} {', '.join(hints)}; the load options are: {', '.join(sorted(_OPTION_NAMES))}"


def check_config_overrides(overrides: Mapping[str, Any], accepted: Collection[str] = ()) -> None:
    """See :meth:`LoadOptions.check_config_overrides`."""
    suspicious = [
        key
        for key in overrides
        if key not in accepted
        and (key in _OTHER_NAMES or difflib.get_close_matches(key, _OPTION_NAMES, n=1, cutoff=_TYPO_CUTOFF))
    ]
    if suspicious:
        raise TypeError(
            unknown_options_message(suspicious)
            + "; any other keyword is a config override (a field of the backbone's config)"
        )


DEFAULT_MAX_PARAMETERS = 20_000_000_000
"""Largest model (in parameters and buffer elements) built or loaded unless a larger limit is asked for:
above the biggest vision backbones (ViT-7B: 6.7 billion), far below what a hostile ``config.json`` can ask for."""

MAX_PARAMETERS_ENV = "BACKBONES_MAX_PARAMETERS"
"""Environment variable that sets the limit when no ``max_parameters`` is given (an integer, ``_`` allowed)."""


def parameter_limit(max_parameters: int | None = None) -> int:
    """The most parameters a model may have before it is built: ``max_parameters``, else the environment
    variable ``BACKBONES_MAX_PARAMETERS``, else :data:`DEFAULT_MAX_PARAMETERS` (20 billion).

    Raises:
        TypeError: ``max_parameters`` is not a positive int.
        ValueError: The environment variable is not a positive integer.
    """
    if max_parameters is not None:
        return _check_parameter_limit(max_parameters, "max_parameters")
    text = os.environ.get(MAX_PARAMETERS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PARAMETERS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"{MAX_PARAMETERS_ENV}={text!r} is not a positive integer; set it to the most parameters a model may "
            f"have (e.g. 30000000000) or unset it for the default ({DEFAULT_MAX_PARAMETERS:_})"
        )
    return value


def _check_parameter_limit(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TypeError(f"{name} must be a positive int (a number of parameters, e.g. 30_000_000_000), got {value!r}")
    return value


def _require(name: str, value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}, got {value!r}")


def _as_tuple(value: Any) -> Any:
    # The config validates the selection itself (and says what is wrong with it); only lists change here.
    return tuple(value) if isinstance(value, list) else value
