"""ToyNet: a tiny plain-conv backbone used to test backbones-core as a third party would use it."""
