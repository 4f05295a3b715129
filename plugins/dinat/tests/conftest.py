"""Test configuration of backbones-dinat: the ``oracle`` marker."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "oracle: compares with transformers 4.53.3, installed on first use into .venvs/ (needs PyPI once)"
    )
