"""What a plugin's source imports from other distributions (a plugin built on another uses its public API only)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

__all__ = ["imported_names"]


def imported_names(package: ModuleType, prefix: str) -> list[tuple[str, list[str]]]:
    """Every ``from <module> import <names>`` in ``package``'s own modules whose module starts with ``prefix``.

    Args:
        package: An imported package, e.g. ``backbones_pixio``; its folder's ``*.py`` files are read (not run).
        prefix: The start of the imported modules' names, e.g. ``"backbones_dinov2"``.

    Returns:
        ``(module, names)`` per import statement, the files in name order and the statements in source order.
    """
    if package.__file__ is None:
        raise ValueError(f"{package.__name__} has no source folder to read")
    imported: list[tuple[str, list[str]]] = []
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module is not None and node.module.startswith(prefix):
                imported.append((node.module, [alias.name for alias in node.names]))
    return imported
