"""Integrations of backbones with the libraries that put heads on them.

Each integration is a module of its own, imported explicitly, and needs its library (an extra of
backbones-core): ``import backbones`` imports none of them.

* :mod:`backbones.integrations.torchvision`: a backbone as the ``backbone`` of torchvision's detectors
  (``pip install "backbones-core[torchvision]"``).
* :mod:`backbones.integrations.transformers`: a backbone inside transformers' heads through their
  ``backbone_config`` (``pip install "backbones-core[transformers]"``).
"""

from __future__ import annotations

__all__: list[str] = []
