"""Integrations of backbones with the libraries that put heads on them.

Each integration is a module of its own, imported explicitly, and needs its library (an extra of
backbones-core): ``import backbones`` imports none of them.

* :mod:`backbones.integrations.torchvision`: a backbone as the ``backbone`` of torchvision's detectors
  (``pip install "backbones-core[torchvision]"``).
"""

from __future__ import annotations

__all__: list[str] = []
