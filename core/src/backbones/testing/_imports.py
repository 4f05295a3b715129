"""What code imports: a plugin's source from other distributions (a plugin built on another uses its public API
only), and a snippet run in a fresh interpreter (``import backbones`` stays free of torch and of the plugins)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["imported_names", "modules_loaded_by"]

_MODULES_MARK = "-- modules loaded --"


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


def modules_loaded_by(code: str) -> frozenset[str]:
    """The modules loaded once ``code`` has run in a fresh Python interpreter (this one's executable).

    Use it to check that importing or calling something stays light, e.g.
    ``assert "torch" not in modules_loaded_by("import backbones")``.

    Args:
        code: Python source to run (statements, as for ``python -c``); what it prints is ignored.

    Returns:
        The names in the interpreter's ``sys.modules`` after ``code``.

    Raises:
        AssertionError: ``code`` failed; the message holds its standard error.
    """
    script = f"{code}\nimport sys as _sys\nprint({_MODULES_MARK!r}, *sorted(_sys.modules), sep='\\n')\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"the code exited with {result.returncode}:\n{code}\n{result.stderr}")
    return frozenset(result.stdout.rpartition(_MODULES_MARK + "\n")[2].split())
