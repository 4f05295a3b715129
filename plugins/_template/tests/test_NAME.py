"""Tests of backbones-NAME: the conformance kit, parity with transformers, a default-size shape check."""

from __future__ import annotations

from typing import Any

from backbones.testing import BackboneConformance
from backbones_NAME import NAMEConfig


class TestNAMEConformance(BackboneConformance):
    model_type = "NAME"

    def make_config(self, **overrides: Any) -> NAMEConfig:
        return NAMEConfig(hidden_sizes=[8, 16], **overrides)
