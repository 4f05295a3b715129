"""The conformance kit run on the third-party ToyNet: proves the kit itself passes a correct backbone."""

from __future__ import annotations

from typing import Any

import pytest

from backbones.testing import BackboneConformance
from backbones_toynet.model import ToyNetConfig


@pytest.mark.usefixtures("registry")
class TestToyNetConformance(BackboneConformance):
    model_type = "toynet"

    def make_config(self, **overrides: Any) -> ToyNetConfig:
        return ToyNetConfig(widths=[4, 8, 8], **overrides)
