"""The plugin registry: entry points of the group ``backbones``, discovered once, on first use.

Discovery imports each plugin module (not its model code), skips and records a plugin that fails, and
calls each plugin's ``register_backbones`` hook separately so every registration and every failure is
attributed to its distribution. A model type claimed by two distributions is recorded as a conflict
and raises, naming both, only when that type is requested.

Each plugin module declares the plugin-API version it was built for, ``BACKBONES_PLUGIN_API = "1.1"``.
It is loaded only if that fits :data:`backbones.PLUGIN_API_VERSION`: the same major version and a minor
version no newer than core's. Others are recorded as failures (``backbones list`` shows them).

Since plugin API 1.1 a registration also says how the model type's images are prepared: the processor
its checkpoints use (a family core implements, or one the plugin implements itself, given lazily).
Core holds no table from model types to processors; :mod:`backbones._image` asks the registry.

Environment variables:
    BACKBONES_DISABLE_PLUGIN_AUTOLOAD: when set to a true value, no entry point is loaded.
    BACKBONES_DISABLE_PLUGINS: comma-separated entry-point or distribution names to skip.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import pluggy

from . import PLUGIN_API_VERSION, hookspecs
from ._errors import PluginError, UnknownModelTypeError
from ._processor_families import FAMILY_NAMES, family_names_text

__all__ = [
    "KNOWN_DISTRIBUTIONS",
    "PluginFailure",
    "ProcessorRegistration",
    "Register",
    "Registration",
    "get_registry",
    "register",
]

logger = logging.getLogger("backbones")

ENTRY_POINT_GROUP = "backbones"
RUNTIME = "<runtime>"

# Architectures this project publishes, so a missing plugin gets an exact install command.
KNOWN_DISTRIBUTIONS: dict[str, str] = {
    "beit": "backbones-beit",
    "bit": "backbones-bit",
    "convnext": "backbones-convnext",
    "convnextv2": "backbones-convnextv2",
    "dinat": "backbones-dinat",
    "dinov2": "backbones-dinov2",
    "dinov2_with_registers": "backbones-dinov2-with-registers",
    "dinov3_convnext": "backbones-dinov3-convnext",
    "dinov3_vit": "backbones-dinov3-vit",
    "focalnet": "backbones-focalnet",
    "hgnet_v2": "backbones-hgnet-v2",
    "hiera": "backbones-hiera",
    "lw_detr_vit": "backbones-lw-detr-vit",
    "maskformer-swin": "backbones-maskformer-swin",
    "nat": "backbones-nat",
    "pixio": "backbones-pixio",
    "pp_lcnet": "backbones-pp-lcnet",
    "pp_lcnet_v3": "backbones-pp-lcnet",
    "pp_lcnet_v4": "backbones-pp-lcnet",
    "pvt_v2": "backbones-pvt-v2",
    "resnet": "backbones-resnet",
    "rf_detr_dinov2": "backbones-rf-detr-dinov2",
    "rt_detr_resnet": "backbones-rt-detr-resnet",
    "sapiens2": "backbones-sapiens2",
    "swin": "backbones-swin",
    "swinv2": "backbones-swinv2",
    "textnet": "backbones-textnet",
    "timm_backbone": "backbones-timm",
    "tipsv2": "backbones-tipsv2",
    "tipsv2_vision_model": "backbones-tipsv2",
    "uvdoc_backbone": "backbones-uvdoc-backbone",
    "vitdet": "backbones-vitdet",
    "vitpose_backbone": "backbones-vitpose-backbone",
}


class Register(Protocol):
    """The callable a plugin's ``register_backbones`` hook receives."""

    def __call__(
        self,
        model_type: str,
        *,
        config: type | str,
        model: type | str,
        aliases: tuple[str, ...] | list[str] = (),
        description: str = "",
        image_processor: str | None = None,
        image_processor_types: Sequence[str] = (),
        image_processor_classes: Mapping[str, type | str] | None = None,
    ) -> None: ...


# The registration arguments each plugin-API minor version added: a plugin that passes one declares that version.
_ADDED_IN: dict[str, tuple[int, int]] = {
    "image_processor": (1, 1),
    "image_processor_types": (1, 1),
    "image_processor_classes": (1, 1),
}


def _parse_api_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def check_plugin_api(module: Any, plugin_name: str, dist_name: str) -> None:
    """Raise :class:`PluginError` unless ``module`` declares a plugin-API version this core implements.

    A plugin built for ``M.m`` fits a core implementing ``M.n`` with ``m <= n``: minor versions only add.
    """
    core_major, core_minor = _parse_api_version(PLUGIN_API_VERSION)
    fits = f'"{core_major}.0" to "{core_major}.{core_minor}"'
    declared = getattr(module, "BACKBONES_PLUGIN_API", None)
    if declared is None:
        raise PluginError(
            f"plugin {plugin_name!r} ({dist_name}) does not declare the plugin API it was built for, so it is not "
            f"loaded; its module {module.__name__!r} must set BACKBONES_PLUGIN_API (this backbones-core fits {fits})"
        )
    try:
        major, minor = _parse_api_version(declared)
    except (AttributeError, ValueError):
        raise PluginError(
            f"plugin {plugin_name!r} ({dist_name}) declares BACKBONES_PLUGIN_API = {declared!r}, which is not a "
            f'"major.minor" string; this backbones-core fits {fits}'
        ) from None
    if major != core_major or minor > core_minor:
        advice = "upgrade backbones-core" if (major, minor) > (core_major, core_minor) else f"upgrade {dist_name}"
        raise PluginError(
            f"plugin {plugin_name!r} ({dist_name}) was built for plugin API {declared}, but this backbones-core "
            f"implements {PLUGIN_API_VERSION} and fits plugins built for {fits}; it is not loaded ({advice}, or "
            f"install a release of {dist_name} built for a fitting version)"
        )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _import_object(target: type | str, what: str, model_type: str) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise PluginError(f"the {what} of model type {model_type!r}, {target!r}, does not exist") from None


@dataclass
class Registration:
    """One registered model type.

    Attributes:
        image_processor: The ``image_processor_type`` used for this type's checkpoints whose
            ``preprocessor_config.json`` names none (transformers' ``model_type`` fallback), or None.
        image_processor_types: Every ``image_processor_type`` its checkpoints write (the fallback first).
        image_processor_classes: Processors the plugin implements itself, by ``image_processor_type``.
    """

    model_type: str
    config: type | str
    model: type | str
    distribution: str
    version: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    image_processor: str | None = None
    image_processor_types: tuple[str, ...] = ()
    image_processor_classes: dict[str, type | str] = field(default_factory=dict)

    def load_config_class(self) -> type:
        """Import (if lazy) and return the config class."""
        return _import_object(self.config, "config class", self.model_type)

    def load_model_class(self) -> type:
        """Import (if lazy) and return the backbone class."""
        return _import_object(self.model, "model class", self.model_type)


@dataclass
class ProcessorRegistration:
    """An image processor a plugin implements, under the ``image_processor_type`` its checkpoints write."""

    name: str
    target: type | str
    distribution: str
    version: str

    def load_class(self) -> type:
        """Import (if lazy) and return the processor class.

        Raises:
            PluginError: The module cannot be imported or lacks the attribute; the message names the
                distribution that declared it.
        """
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise PluginError(
                f"the image processor {self.name!r} of {self.distribution}, {self.target!r}, cannot be imported: "
                f"{type(error).__name__}: {error}"
            ) from error
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise PluginError(
                f"the image processor {self.name!r} of {self.distribution}, {self.target!r}, does not exist: "
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None


@dataclass
class PluginFailure:
    """A plugin that could not be loaded or registered."""

    name: str
    distribution: str
    version: str
    error: BaseException
    details: str = field(default="", repr=False)

    @property
    def summary(self) -> str:
        """``"ExceptionType: message"`` of the original error."""
        return f"{type(self.error).__name__}: {self.error}"


def _check_declared_processors(registrations: Sequence[Registration], implemented: set[str]) -> None:
    """Every processor a registration declares is one of core's families or in ``implemented``."""
    for registration in registrations:
        for name in registration.image_processor_types:
            if name not in FAMILY_NAMES and name not in implemented:
                raise PluginError(
                    f"model type {registration.model_type!r} declares the image processor {name!r}, which is neither "
                    f"a family backbones-core implements ({family_names_text()}) nor one its plugin implements; "
                    f"give its class in image_processor_classes={{{name!r}: 'module:Class'}}"
                )


def _validate_class(value: object, what: str) -> None:
    if isinstance(value, str):
        module_name, sep, attribute = value.partition(":")
        if not sep or not module_name or not attribute:
            raise PluginError(f"{what} must be a class or a 'module:attr' string, got {value!r}")
    elif not isinstance(value, type):
        raise PluginError(f"{what} must be a class or a 'module:attr' string, got {type(value).__name__}")


class Registry:
    """Model types and the plugins that provide them. Use :func:`get_registry`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._discovered = False
        self._names: dict[str, Registration] = {}  # model types and aliases
        self._conflicts: dict[str, list[str]] = {}
        self._processors: dict[str, ProcessorRegistration] = {}  # image processors plugins implement
        self._processor_conflicts: dict[str, list[str]] = {}
        self._failures: list[PluginFailure] = []
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)

    # -- discovery --------------------------------------------------------------------------------

    def discover(self) -> None:
        """Load the entry points once (thread-safe). Later calls return at once."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            if not _truthy(os.environ.get("BACKBONES_DISABLE_PLUGIN_AUTOLOAD")):
                self._load_entry_points()
            self._discovered = True

    def _load_entry_points(self) -> None:
        disabled = {name.strip() for name in os.environ.get("BACKBONES_DISABLE_PLUGINS", "").split(",") if name.strip()}
        for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else entry_point.value
            version = dist.version if dist is not None else ""
            if entry_point.name in disabled or dist_name in disabled:
                logger.debug("plugin %s (%s) disabled by BACKBONES_DISABLE_PLUGINS", entry_point.name, dist_name)
                continue
            if self.plugin_manager.has_plugin(entry_point.name):
                continue  # the same distribution visible twice on sys.path
            try:
                module = entry_point.load()
                check_plugin_api(module, entry_point.name, dist_name)
                self.plugin_manager.register(module, name=entry_point.name)
                self._check_hooks(entry_point.name)
            except (Exception, SystemExit) as error:  # a broken plugin must not take the registry down
                self._fail(entry_point.name, dist_name, version, error)
                continue
            self._call_register_hook(entry_point.name, dist_name, version)

    def _check_hooks(self, plugin_name: str) -> None:
        plugin = self.plugin_manager.get_plugin(plugin_name)
        try:
            self.plugin_manager.check_pending()
        except pluggy.PluginValidationError as error:
            self.plugin_manager.unregister(plugin)
            raise PluginError(f"plugin {plugin_name!r} implements an unknown hook: {error}") from error

    def _call_register_hook(self, plugin_name: str, dist_name: str, version: str) -> None:
        plugin = self.plugin_manager.get_plugin(plugin_name)
        impls = [impl for impl in self.plugin_manager.hook.register_backbones.get_hookimpls() if impl.plugin is plugin]
        if not impls:
            self._fail(
                plugin_name,
                dist_name,
                version,
                PluginError(f"plugin {plugin_name!r} implements no register_backbones hook"),
            )
            return
        staged: list[Registration] = []
        declared_api = _parse_api_version(getattr(plugin, "BACKBONES_PLUGIN_API", PLUGIN_API_VERSION))

        def register_from_plugin(model_type: str, **kwargs: Any) -> None:
            for argument, added in _ADDED_IN.items():
                if argument in kwargs and declared_api < added:
                    raise PluginError(
                        f"model type {model_type!r} passes {argument}, which plugin API {added[0]}.{added[1]} added, "
                        f"but plugin {plugin_name!r} declares BACKBONES_PLUGIN_API = "
                        f"'{declared_api[0]}.{declared_api[1]}'; declare \"{added[0]}.{added[1]}\" (and depend on a "
                        "backbones-core that implements it)"
                    )
            staged.append(self._make_registration(model_type, distribution=dist_name, version=version, **kwargs))

        try:
            for impl in impls:
                impl.function(register=register_from_plugin)
            _check_declared_processors(staged, {name for entry in staged for name in entry.image_processor_classes})
        except (Exception, SystemExit) as error:
            # Nothing of a plugin whose hook failed is kept: a half-registered plugin is worse than none.
            self._fail(plugin_name, dist_name, version, error)
            return
        for registration in staged:
            self._add(registration)

    def _fail(self, name: str, dist_name: str, version: str, error: BaseException) -> None:
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self._failures.append(PluginFailure(name, dist_name, version, error, details))
        logger.warning(
            "backbones plugin %r (%s) failed and was skipped: %s: %s", name, dist_name, type(error).__name__, error
        )

    # -- registration -----------------------------------------------------------------------------

    @staticmethod
    def _make_registration(
        model_type: str,
        *,
        config: type | str,
        model: type | str,
        distribution: str,
        version: str,
        aliases: tuple[str, ...] | list[str] = (),
        description: str = "",
        image_processor: str | None = None,
        image_processor_types: Sequence[str] = (),
        image_processor_classes: Mapping[str, type | str] | None = None,
    ) -> Registration:
        if not isinstance(model_type, str) or not model_type:
            raise PluginError(f"model_type must be a non-empty string, got {model_type!r}")
        _validate_class(config, f"config of {model_type!r}")
        _validate_class(model, f"model of {model_type!r}")
        if isinstance(aliases, str) or not all(isinstance(alias, str) and alias for alias in aliases):
            raise PluginError(f"aliases of {model_type!r} must be a list of non-empty strings, got {aliases!r}")
        if image_processor is not None and (not isinstance(image_processor, str) or not image_processor):
            raise PluginError(
                f"image_processor of {model_type!r} must be an image_processor_type name (a non-empty string) or "
                f"None, got {image_processor!r}"
            )
        if not isinstance(image_processor_types, (list, tuple)) or not all(
            isinstance(name, str) and name for name in image_processor_types
        ):
            raise PluginError(
                f"image_processor_types of {model_type!r} must be a list of non-empty strings, got "
                f"{image_processor_types!r}"
            )
        classes = {} if image_processor_classes is None else image_processor_classes
        if not isinstance(classes, Mapping):
            raise PluginError(
                f"image_processor_classes of {model_type!r} must be a dict from image_processor_type names to "
                f"classes or 'module:attr' strings, got {type(classes).__name__}"
            )
        for name, target in classes.items():
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f"image_processor_classes of {model_type!r} has a key {name!r}; keys must be non-empty strings"
                )
            if name in FAMILY_NAMES:
                raise PluginError(
                    f"image_processor_classes of {model_type!r} gives a class for {name!r}, a processor family "
                    f"backbones-core implements; name your own processor differently, or drop it from "
                    f"image_processor_classes to use core's"
                )
            _validate_class(target, f"image processor {name!r} of {model_type!r}")
        declared = tuple(dict.fromkeys([*([image_processor] if image_processor else []), *image_processor_types]))
        return Registration(
            model_type,
            config,
            model,
            distribution,
            version,
            tuple(aliases),
            description,
            image_processor,
            declared,
            dict(classes),
        )

    def _add(self, registration: Registration, *, replace: bool = False) -> None:
        for name in (registration.model_type, *registration.aliases):
            owner = self._names.get(name)
            if not replace and (owner is not None or name in self._conflicts):
                claimants = self._conflicts.setdefault(name, [owner.distribution] if owner else [])
                claimants.append(registration.distribution)
                self._names.pop(name, None)
                logger.warning(
                    "model type %r is provided by %s; it is unusable until all but one are uninstalled",
                    name,
                    " and ".join(claimants),
                )
                continue
            self._conflicts.pop(name, None)
            self._names[name] = registration
        for name, target in registration.image_processor_classes.items():
            processor = ProcessorRegistration(name, target, registration.distribution, registration.version)
            current = self._processors.get(name)
            if replace or (current is None and name not in self._processor_conflicts):
                self._processor_conflicts.pop(name, None)
                self._processors[name] = processor
            elif current is not None and (current.distribution, current.target) == (processor.distribution, target):
                continue  # two model types of one plugin sharing its processor
            else:
                claimants = self._processor_conflicts.setdefault(name, [current.distribution] if current else [])
                claimants.append(registration.distribution)
                self._processors.pop(name, None)
                logger.warning(
                    "image processor %r is provided by %s; it is unusable until all but one are uninstalled",
                    name,
                    " and ".join(claimants),
                )

    def register(
        self,
        model_type: str,
        *,
        config: type | str,
        model: type | str,
        aliases: tuple[str, ...] | list[str] = (),
        description: str = "",
        image_processor: str | None = None,
        image_processor_types: Sequence[str] = (),
        image_processor_classes: Mapping[str, type | str] | None = None,
        replace: bool = False,
    ) -> None:
        """Register classes at runtime (e.g. a model defined in a notebook).

        The arguments are those of the ``register`` callable of the ``register_backbones`` hook; a
        declared image processor must be a core family, one of ``image_processor_classes``, or one an
        installed plugin implements.

        Raises:
            PluginError: When ``model_type`` is already registered and ``replace`` is false, or an
                argument is invalid.
        """
        self.discover()
        registration = self._make_registration(
            model_type,
            config=config,
            model=model,
            distribution=RUNTIME,
            version="",
            aliases=aliases,
            description=description,
            image_processor=image_processor,
            image_processor_types=image_processor_types,
            image_processor_classes=image_processor_classes,
        )
        _check_declared_processors([registration], {*registration.image_processor_classes, *self._processors})
        with self._lock:
            for name in (model_type, *registration.aliases):
                if not replace and (name in self._names or name in self._conflicts):
                    existing = self._names.get(name)
                    by = existing.distribution if existing else " and ".join(self._conflicts[name])
                    raise PluginError(
                        f"model type {name!r} is already registered by {by}; pass replace=True to override it"
                    )
            self._add(registration, replace=replace)

    # -- lookup -----------------------------------------------------------------------------------

    def registrations(self) -> list[Registration]:
        """Every registration, sorted by model type."""
        self.discover()
        unique = {id(entry): entry for entry in self._names.values()}
        return sorted(unique.values(), key=lambda entry: entry.model_type)

    @property
    def failures(self) -> list[PluginFailure]:
        """Plugins that could not be loaded or registered, with their errors."""
        self.discover()
        return list(self._failures)

    @property
    def conflicts(self) -> dict[str, list[str]]:
        """Model types claimed by several distributions, with those distributions."""
        self.discover()
        return {name: list(dists) for name, dists in self._conflicts.items()}

    def model_types(self) -> list[str]:
        """Registered model types and aliases."""
        self.discover()
        return sorted(self._names)

    def image_processors(self) -> dict[str, ProcessorRegistration]:
        """The image processors plugins implement, by ``image_processor_type`` (core's families excluded)."""
        self.discover()
        return dict(sorted(self._processors.items()))

    def image_processor(self, name: str) -> ProcessorRegistration | None:
        """The plugin processor registered as ``name``, or None when no plugin implements one by that name.

        Raises:
            PluginError: Several distributions implement a processor of that name.
        """
        self.discover()
        if name in self._processor_conflicts:
            raise PluginError(
                f"image processor {name!r} is provided by several distributions: "
                f"{' and '.join(self._processor_conflicts[name])}; uninstall all but one"
            )
        return self._processors.get(name)

    def get(self, model_type: str) -> Registration:
        """Return the registration of ``model_type`` (or of an alias).

        Raises:
            PluginError: The type is claimed by two distributions, or its plugin failed to load
                (the original error is chained).
            UnknownModelTypeError: No plugin provides it; the message lists installed types and, for
                an architecture this project publishes, the install command.
        """
        self.discover()
        if not isinstance(model_type, str):
            raise UnknownModelTypeError(f"model_type must be a string, got {type(model_type).__name__} {model_type!r}")
        if model_type in self._names:
            return self._names[model_type]
        if model_type in self._conflicts:
            raise PluginError(
                f"model type {model_type!r} is provided by several distributions: "
                f"{' and '.join(self._conflicts[model_type])}; uninstall all but one"
            )
        known_dist = KNOWN_DISTRIBUTIONS.get(model_type)
        for failure in self._failures:
            if failure.name == model_type or (known_dist is not None and failure.distribution == known_dist):
                raise PluginError(
                    f"model type {model_type!r} comes from plugin {failure.distribution}, which failed to load: "
                    f"{failure.summary}"
                ) from failure.error
        installed = ", ".join(self.model_types()) or "none"
        message = f"unknown model_type {model_type!r}; installed model types: {installed}."
        if known_dist is not None:
            message += f" Install its plugin with: pip install {known_dist}"
        elif self.failures:
            failed = ", ".join(f"{failure.distribution} ({failure.summary})" for failure in self.failures)
            message += f" Plugins that failed to load: {failed}"
        else:
            message += " Is the plugin that provides it installed?"
        raise UnknownModelTypeError(message)


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """Return the process-wide registry (created on first use; discovery happens on first lookup)."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry()
    return _registry


def reset_registry() -> None:
    """Forget the registry so the next use discovers plugins again (for tests and notebooks)."""
    global _registry
    with _registry_lock:
        _registry = None


def register(
    model_type: str,
    *,
    config: type | str,
    model: type | str,
    aliases: tuple[str, ...] | list[str] = (),
    description: str = "",
    image_processor: str | None = None,
    image_processor_types: Sequence[str] = (),
    image_processor_classes: Mapping[str, type | str] | None = None,
    replace: bool = False,
) -> None:
    """Register a backbone at runtime; see :meth:`Registry.register`."""
    get_registry().register(
        model_type,
        config=config,
        model=model,
        aliases=aliases,
        description=description,
        image_processor=image_processor,
        image_processor_types=image_processor_types,
        image_processor_classes=image_processor_classes,
        replace=replace,
    )
