"""Lazy public names for plugin packages: a name is imported from its module on first access.

A plugin's ``__init__.py`` must not import torch (``import backbones_<name>`` stays cheap). Its public names
are declared once, in a type stub next to it, ``__init__.pyi``, as explicit re-exports::

    from ._config import MyConfig as MyConfig
    from ._model import MyBackbone as MyBackbone

and ``__init__.py`` attaches them::

    from backbones.lazy import attach_stub

    __getattr__, __dir__, __all__ = attach_stub(__name__, __file__)

Type checkers read the stub; at run time :func:`attach_stub` reads the same lines (the lazy-loading layout
of Scientific Python's SPEC 1), so the list of public names cannot drift between the two.
:func:`lazy_getattr` is the lower-level piece, for a package that keeps its own name -> module table.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["attach_stub", "lazy_getattr", "stub_exports"]


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


def stub_exports(stub: str | Path) -> dict[str, str]:
    """The public names a type stub re-exports, each with the module that defines it.

    A public name is one imported as itself (``from ._model import X as X``, the stub convention for an
    explicit re-export); other lines of the stub are ignored.

    Args:
        stub: Path of the ``.pyi`` file.

    Returns:
        Name -> module (relative modules keep their leading dots), in the stub's order.

    Raises:
        FileNotFoundError: The stub does not exist (the message says what to write in it).
        ValueError: The stub re-exports nothing, or one name from two modules.
    """
    path = Path(stub)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a package attaching its public names with backbones.lazy.attach_stub declares "
            "them there, one line each: 'from ._model import MyBackbone as MyBackbone'"
        )
    exports: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if not isinstance(node, ast.ImportFrom):
            continue
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            if alias.asname != alias.name:
                continue
            if exports.get(alias.name, module) != module:
                raise ValueError(f"{path}: {alias.name!r} is re-exported from both {exports[alias.name]} and {module}")
            exports[alias.name] = module
    if not exports:
        raise ValueError(
            f"{path} re-exports no name: write each public name as 'from ._model import MyBackbone as MyBackbone'"
        )
    return exports


def attach_stub(package: str, init_file: str | Path) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Lazy ``__getattr__``, ``__dir__`` and ``__all__`` for a package whose public names are in ``__init__.pyi``.

    Args:
        package: The package's ``__name__``.
        init_file: The package's ``__file__``; the stub is the ``.pyi`` file of the same name beside it.

    Returns:
        ``(__getattr__, __dir__, __all__)`` to assign at the package's top level: names are imported from
        their modules on first access (see :func:`lazy_getattr`), ``dir()`` lists them before they are, and
        ``__all__`` is the sorted public names.

    Raises:
        FileNotFoundError: The stub is missing.
        ValueError: The stub re-exports nothing, or one name from two modules.
    """
    exports = stub_exports(Path(init_file).with_suffix(".pyi"))
    public = sorted(exports)

    def __dir__() -> list[str]:
        module = sys.modules.get(package)
        own = vars(module) if module is not None else {}
        return sorted(set(own) | set(public))

    return lazy_getattr(package, exports), __dir__, public
