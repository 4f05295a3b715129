"""The transformers 4.53.3 oracle of the NAT and DiNAT tests (shared by backbones-dinat's tests).

transformers 4.53.3 is the last release whose DiNAT works and whose deprecated models include NAT.
It is installed once, with pip, into ``<repo>/.venvs/transformers-4.53.3`` (git-ignored), next to
nothing else: the oracle runs on this test environment's Python and torch, with that folder first on
``PYTHONPATH``. natten is not installed; a fake ``natten`` package whose two kernels are the
brute-force references of ``natten_reference.py`` takes its place.

:func:`run_oracle` runs every case of a test module in one subprocess (``oracle_script.py``): it builds
the reference models, re-randomises every weight, saves checkpoints and writes the expected outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parents[2]
ORACLE_VERSION = "4.53.3"
ORACLE_HOME = ROOT / ".venvs" / f"transformers-{ORACLE_VERSION}"
# transformers itself, the two dependencies it pins below what this environment has, and requests
# (which it imports and this environment may lack). Everything else comes from this environment.
ORACLE_REQUIREMENTS = (
    f"transformers=={ORACLE_VERSION}",
    "huggingface_hub>=0.30,<1.0",
    "tokenizers>=0.21,<0.22",
    "requests>=2.30",
    "urllib3>=1.21.1",
    "certifi",
    "charset_normalizer>=2",
    "idna>=2.5",
)
_MARKER = ".installed"


def _check_import(home: Path) -> None:
    code = "import transformers, sys; assert transformers.__version__ == sys.argv[1], transformers.__version__"
    result = subprocess.run(
        [sys.executable, "-c", code, ORACLE_VERSION], env=subprocess_environment(home), capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"transformers {ORACLE_VERSION} in {home} does not import:\n{result.stderr}")


def subprocess_environment(*paths: Path) -> dict[str, str]:
    """This process's environment with ``paths`` first on ``PYTHONPATH``, and the hub offline."""
    inherited = os.environ.get("PYTHONPATH")
    entries = [str(path) for path in paths] + ([inherited] if inherited else [])
    # Offline: the oracle never downloads anything, and transformers must not try.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(entries), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def ensure_oracle_env() -> Path:
    """Install the oracle into ``.venvs/`` unless a complete install is there; return its folder.

    Safe under pytest-xdist: a file lock serialises workers, the install goes to a temporary folder that
    is renamed into place, and a marker file names the requirements it was made from.
    """
    from filelock import FileLock

    wanted = "\n".join(ORACLE_REQUIREMENTS) + "\n"
    marker = ORACLE_HOME / _MARKER
    ORACLE_HOME.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ORACLE_HOME) + ".lock", timeout=900):
        if marker.is_file() and marker.read_text() == wanted:
            return ORACLE_HOME
        staging = ORACLE_HOME.with_name(ORACLE_HOME.name + ".partial")
        for stale in (staging, ORACLE_HOME):
            if stale.exists():
                shutil.rmtree(stale)
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
            "--target", str(staging), *ORACLE_REQUIREMENTS,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            pytest.fail(f"could not install the transformers {ORACLE_VERSION} oracle:\n{result.stderr[-3000:]}")
        _check_import(staging)
        staging.rename(ORACLE_HOME)
        marker.write_text(wanted)
    return ORACLE_HOME


def fake_natten(directory: Path) -> Path:
    """Write a ``natten`` package (version 0.14.6, which transformers accepts) backed by the references.

    Returns the folder to put on ``PYTHONPATH``, together with this tests folder (:data:`TESTS`).
    """
    package = directory / "natten"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('__version__ = "0.14.6"\n')
    (package / "functional.py").write_text(
        textwrap.dedent(
            """\
            # Brute-force stand-ins for natten 0.14's CPU/CUDA kernels, from the backbones-nat tests.
            from natten_reference import natten2dav, natten2dqkrpb

            __all__ = ["natten2dav", "natten2dqkrpb"]
            """
        )
    )
    info = directory / "natten-0.14.6.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: natten\nVersion: 0.14.6\n")
    return directory


def run_oracle(cases: list[dict[str, Any]], directory: Path) -> Path:
    """Run ``cases`` (see ``oracle_script.py``) with transformers 4.53.3; outputs go to ``directory/<name>``."""
    home = ensure_oracle_env()
    fake = fake_natten(directory / "_fake_natten")
    spec = directory / "cases.json"
    spec.write_text(json.dumps(cases, indent=1))
    result = subprocess.run(
        [sys.executable, str(TESTS / "oracle_script.py"), str(spec), str(directory)],
        env=subprocess_environment(home, fake, TESTS),
        capture_output=True,
        text=True,
    )
    if result.returncode:
        pytest.fail(f"the transformers {ORACLE_VERSION} oracle failed:\n{result.stderr[-5000:]}")
    return directory
