#!/usr/bin/env python3
"""Developer entry point. Needs only Python >= 3.10 and pip; sets up its own virtual environment.

    python3 dev.py demo     # load a transformers-format Swin checkpoint and extract feature maps (no network)
    python3 dev.py test     # ruff, mypy (every distribution), then the whole test suite: what CI runs
    python3 dev.py setup    # only create/refresh .venv

The environment lives in .venv and is refreshed when requirements/test.txt or a pyproject.toml changes.
Every distribution is installed editable: core/ and each plugins/<name>/ (found by globbing).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".backbones-installed"
REQUIREMENTS = ROOT / "requirements" / "test.txt"


def distributions() -> list[Path]:
    """core/ first, then every plugin folder (a template or private folder starts with '_')."""
    plugins = sorted(
        path.parent for path in ROOT.glob("plugins/*/pyproject.toml") if not path.parent.name.startswith("_")
    )
    return [ROOT / "core", *plugins]


def mypy_targets() -> list[Path]:
    """The src folder of every distribution: mypy checks them together, so cross-plugin imports resolve."""
    return [dist / "src" for dist in distributions()]


def house_checks() -> list[list[str]]:
    """The checks `test` runs before the suite: lint, format, and types of every distribution."""
    mypy = ["mypy", *(str(target.relative_to(ROOT)) for target in mypy_targets())]
    return [["ruff", "check", "."], ["ruff", "format", "--check", "."], mypy]


def python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for path in [REQUIREMENTS, *(dist / "pyproject.toml" for dist in distributions())]:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(*command: object) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT)


def setup() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 -- dev.py may be started by an older python3
        sys.exit(f"backbones needs Python >= 3.10, this is {sys.version.split()[0]}")
    wanted = fingerprint()
    if python().exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not python().exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [python(), "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "install", "--quiet", "--upgrade", "pip")
    run(*pip, "install", "--quiet", "-r", REQUIREMENTS)
    editable = [arg for dist in distributions() for arg in ("-e", dist)]
    # One command, so the local backbones-core satisfies every plugin's requirement on it.
    run(*pip, "install", "--quiet", *editable)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    if command not in {"demo", "test", "setup"}:
        print(__doc__)
        return 0 if command in {"help", "-h", "--help"} else 2
    setup()
    if command == "setup":
        return 0
    if command == "demo":
        return subprocess.run([str(python()), str(ROOT / "examples" / "demo.py"), *argv[1:]], cwd=ROOT).returncode
    if not argv[1:]:
        # The whole suite (what CI runs) starts with the house checks: lint, format, types of every distribution.
        for check in house_checks():
            print("+", " ".join(check), flush=True)
            if subprocess.run([str(python()), "-m", *check], cwd=ROOT).returncode:
                return 1
    # loadfile keeps a module's tests on one worker, so module-scoped fixtures (a built venv) are made once.
    args = argv[1:] or ["-n", "2", "--dist", "loadfile"]
    return subprocess.run([str(python()), "-m", "pytest", *args], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
