"""The plugin registry: entry points of the group ``backbones``, discovered once, on first use.

Discovery imports each plugin module (not its model code), skips and records a plugin that fails, and
calls each plugin's ``register_backbones`` hook separately so every registration and every failure is
attributed to its distribution. A model type claimed by two distributions is recorded as a conflict
and raises, naming both, only when that type is requested.

Each plugin module declares the plugin-API version it was built for, ``BACKBONES_PLUGIN_API = "1.0"``.
It is loaded only if that fits :data:`backbones.PLUGIN_API_VERSION`: the same major version and a minor
version no newer than core's. Others are recorded as failures (``backbones list`` shows them).

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
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

import pluggy

from . import PLUGIN_API_VERSION, hookspecs
from ._errors import PluginError, UnknownModelTypeError

__all__ = [
    "KNOWN_DISTRIBUTIONS",
    "PluginFailure",
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
    "focalnet": "backbones-focalnet",
    "maskformer-swin": "backbones-maskformer-swin",
    "nat": "backbones-nat",
    "resnet": "backbones-resnet",
    "swin": "backbones-swin",
    "swinv2": "backbones-swinv2",
    "timm_backbone": "backbones-timm",
    "vitdet": "backbones-vitdet",
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
    ) -> None: ...


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
    """One registered model type."""

    model_type: str
    config: type | str
    model: type | str
    distribution: str
    version: str
    aliases: tuple[str, ...] = ()
    description: str = ""

    def load_config_class(self) -> type:
        """Import (if lazy) and return the config class."""
        return _import_object(self.config, "config class", self.model_type)

    def load_model_class(self) -> type:
        """Import (if lazy) and return the backbone class."""
        return _import_object(self.model, "model class", self.model_type)


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

        def register_from_plugin(model_type: str, **kwargs: Any) -> None:
            staged.append(self._make_registration(model_type, distribution=dist_name, version=version, **kwargs))

        try:
            for impl in impls:
                impl.function(register=register_from_plugin)
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
    ) -> Registration:
        if not isinstance(model_type, str) or not model_type:
            raise PluginError(f"model_type must be a non-empty string, got {model_type!r}")
        _validate_class(config, f"config of {model_type!r}")
        _validate_class(model, f"model of {model_type!r}")
        if isinstance(aliases, str) or not all(isinstance(alias, str) and alias for alias in aliases):
            raise PluginError(f"aliases of {model_type!r} must be a list of non-empty strings, got {aliases!r}")
        return Registration(model_type, config, model, distribution, version, tuple(aliases), description)

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

    def register(
        self,
        model_type: str,
        *,
        config: type | str,
        model: type | str,
        aliases: tuple[str, ...] | list[str] = (),
        description: str = "",
        replace: bool = False,
    ) -> None:
        """Register classes at runtime (e.g. a model defined in a notebook).

        Raises:
            PluginError: When ``model_type`` is already registered and ``replace`` is false.
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
        )
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
    replace: bool = False,
) -> None:
    """Register a backbone at runtime; see :meth:`Registry.register`."""
    get_registry().register(
        model_type, config=config, model=model, aliases=aliases, description=description, replace=replace
    )
