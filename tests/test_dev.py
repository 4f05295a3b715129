"""`python3 dev.py test` type-checks every distribution: core and each plugin, none left out."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("backbones_dev_script", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _expected_targets() -> set[str]:
    """Found here independently of dev.py: core's src and the src of every plugin folder not starting with '_'."""
    plugins = [path for path in ROOT.glob("plugins/*/src") if not path.parent.name.startswith("_")]
    return {str(path.relative_to(ROOT)) for path in [ROOT / "core" / "src", *plugins]}


def test_mypy_runs_on_core_and_every_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _load_dev()
    commands: list[list[str]] = []

    def record(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    # `test` as CI runs it, with the environment refresh and every subprocess replaced by a recorder.
    monkeypatch.setattr(dev, "setup", lambda: None)
    monkeypatch.setattr(dev.subprocess, "run", record)
    assert dev.main(["test"]) == 0

    mypy_runs = [command[3:] for command in commands if command[1:3] == ["-m", "mypy"]]
    assert len(mypy_runs) == 1, commands
    expected = _expected_targets()
    assert {"core/src", "plugins/swin/src", "plugins/timm/src"} <= expected
    assert sorted(mypy_runs[0]) == sorted(expected)
    # The house checks come before the test suite, which runs last.
    assert commands[-1][1:3] == ["-m", "pytest"]
    assert commands[-1][0] == str(dev.python())
