"""Shared fixtures of core's tests: a clean registry with the third-party ToyNet plugin registered."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TOYNET_PROJECT = TESTS / "third_party" / "backbones-toynet"
# ToyNet is importable in-process for unit tests; test_isolated_install.py installs it for real.
sys.path.insert(0, str(TOYNET_PROJECT / "src"))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh registry (entry points rediscovered), with ToyNet registered at runtime; reset afterwards."""
    from backbones._registry import get_registry, reset_registry

    reset_registry()
    registry = get_registry()
    registry.register(
        "toynet",
        config="backbones_toynet.model:ToyNetConfig",
        model="backbones_toynet.model:ToyNetBackbone",
        aliases=["toy-net"],
        replace=True,
    )
    yield registry
    reset_registry()
