"""The conformance kit's declaration defaults: what a subclass may leave out, and what it then gets."""

from __future__ import annotations

from typing import Any

import pytest

from backbones import ConfigError
from backbones.testing import BackboneConformance, FixedSizeProcessorParity, ProcessorParity, TransformersParity
from backbones.testing.cnn import ConfigRefusals
from backbones_resnet import ResNetBackbone, ResNetConfig
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig


def test_conformance_reads_model_type_and_config_from_config_class() -> None:
    class Declared(BackboneConformance):
        config_class = ToyNetConfig
        config = {"widths": [4, 8]}

    class Named(Declared):
        model_type = "something-else"

    assert Declared.model_type == "toynet" and Named.model_type == "something-else"
    config = Declared().make_config(out_indices=[1])
    assert type(config) is ToyNetConfig and config.widths == [4, 8] and config.out_indices == [1]


def test_conformance_without_config_class_asks_for_one() -> None:
    class Undeclared(BackboneConformance):
        pass

    assert Undeclared.model_type == ""
    with pytest.raises(NotImplementedError, match=r"Undeclared: set config_class \(and config\), or write make_config"):
        Undeclared().make_config()


def test_config_refusals_expect_config_error() -> None:
    class Refusals(ConfigRefusals):
        config_class = ResNetConfig

    assert Refusals.error is ConfigError


def test_parity_compares_with_the_class_the_backbone_saves_as_its_architecture() -> None:
    class Renamed(ToyNetBackbone):
        reference_class_name = "ToyNetModel"

    class Parity(TransformersParity):
        backbone_class = Renamed

    class ResNetParity(TransformersParity):
        backbone_class = ResNetBackbone

    assert (Parity.reference_backbone_class, Parity.reference_config_class) == ("ToyNetModel", "ToyNetConfig")
    assert (ResNetParity.config_class, ResNetParity.reference_backbone_class) == (ResNetConfig, "ResNetBackbone")


class _FakeProcessor:
    pass


def test_processor_parity_names_default_to_our_class_and_transformers_pil_class() -> None:
    pytest.importorskip("transformers")

    class Ours(ProcessorParity):
        processor_class = _FakeProcessor

    class WithPilClass(ProcessorParity):
        processor_type = "PvtImageProcessor"

    class OnlyTorchvisionClass(ProcessorParity):
        processor_type = "UVDocImageProcessor"

    class Explicit(WithPilClass):
        reference_processor_class = "PvtImageProcessor"

    assert Ours.processor_type == "_FakeProcessor"
    assert WithPilClass().reference_name() == "PvtImageProcessorPil"
    assert OnlyTorchvisionClass().reference_name() == "UVDocImageProcessor"
    assert Explicit().reference_name() == "PvtImageProcessor"


def test_fixed_size_processor_parity_expects_each_case_files_size() -> None:
    saved: dict[str, Any] = {"image_processor_type": "PvtImageProcessor", "size": {"height": 64, "width": 48}}

    class Parity(FixedSizeProcessorParity):
        processor_type = "PvtImageProcessor"
        preprocessor = {**saved, "do_resize": True}
        minimal_keys = ("do_resize",)
        variants = {"upsampled": {"size": {"height": 160, "width": 120}}, "pinned": {}}
        variant_settings = {"pinned": {"expected_shape": (2, 3, 1, 1)}}

    parity = Parity()
    expected = {
        "named": (2, 3, 64, 48),
        "model-type-fallback": (2, 3, 64, 48),
        "minimal": None,  # the file holds no size: the declared expected_shape (none)
        "upsampled": (2, 3, 160, 120),
        "pinned": (2, 3, 1, 1),
    }
    assert {case: parity.setting("expected_shape", case) for case in Parity.cases()} == expected
    assert parity.setting("batched", "named") is True and parity.setting("image_sizes", "named") == (
        (75, 101),
        (40, 30),
    )
