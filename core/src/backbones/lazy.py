"""Lazy public names for plugin packages: a name is imported from its module on first access.

A plugin's ``__init__.py`` must not import torch (``import backbones_<name>`` stays cheap), so it maps each
public name to the module that defines it and lets :func:`lazy_getattr` import that module when the name is
first used::

    _EXPORTS = {"MyConfig": "._config", "MyBackbone": "._model"}
    __getattr__ = lazy_getattr(__name__, _EXPORTS)

Type checkers still need the names: import them under ``if TYPE_CHECKING:`` too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that imports each public name of ``package`` on first access.

    Args:
        package: The package's ``__name__`` (relative module paths are resolved against it).
        exports: Public name -> module defining it, absolute or relative (``"._model"``).

    Returns:
        The ``__getattr__`` function to assign in the package; it raises ``AttributeError`` for any
        other name, as a module without it would.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    return __getattr__
