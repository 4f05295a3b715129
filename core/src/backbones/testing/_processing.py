"""Preprocessing parity with a transformers image processor: one declaration a plugin, the checks generated.

transformers (and Pillow and numpy) are test-only here: this module imports them inside the checks.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from .. import AutoImageProcessor, ConfigError, ImageProcessor
from ._parity import reference_class

__all__ = ["BitProcessorParity", "ProcessorParity", "imagenet_preprocessor"]

_TYPE_KEY = "image_processor_type"


def imagenet_preprocessor(processor_type: str, **settings: Any) -> dict[str, Any]:
    """A ``preprocessor_config.json`` as transformers saves it for an ImageNet-normalised processor.

    The steps most checkpoints' files switch on are written out: resize (bilinear, ``resample`` 2), rescale by
    1/255, normalise with the ImageNet mean and std; ``settings`` adds the file's other keys (such as ``size``)
    or replaces those.

    Args:
        processor_type: The file's ``image_processor_type`` (as saved, e.g. with a ``Fast`` suffix).
        **settings: The file's other keys, and replaced defaults.

    Returns:
        A new dictionary (for ``ProcessorParity.preprocessor``).
    """
    return {
        _TYPE_KEY: processor_type,
        "do_resize": True,
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        **settings,
    }


class ProcessorParity:
    """A checkpoint's ``preprocessor_config.json`` through :class:`~backbones.AutoImageProcessor`, against the
    transformers processor it names. Subclass it as ``Test<Name>ProcessorParity``.

    ``test_checkpoint_processor_matches_transformers`` is generated once a case (its argument is named
    ``processor_variant``, so a subclass's own tests can take it too). Each case writes a ``config.json`` naming
    ``model_type`` and a ``preprocessor_config.json``, loads it with ``AutoImageProcessor.from_pretrained``,
    checks what it built (``processor_type``, ``processor_class``, ``expected_attributes``, ``description``)
    and runs it and transformers' processor on the same random images, comparing every output: the same outputs
    (but ``reference_only_outputs``), ``pixel_values`` of equal shape (``expected_shape`` where set) within
    ``tolerance`` of each other, other tensors (such as ``pixel_mask``) equal, with equal dtypes. The cases:

    * ``named``: ``preprocessor`` as the checkpoint saves it.
    * ``model-type-fallback``: the same without ``image_processor_type``, so the processor the plugin declares
      for its model type applies. Where the model type declares none, ``fallback_error`` is set instead and
      ``test_file_naming_no_type_is_refused`` checks the error.
    * ``minimal``: where ``minimal_keys`` is set, a file holding only the type and those keys (the other
      settings the processor's defaults).
    * each of ``variants``: ``preprocessor`` with some keys changed.
    * ``<suffix>-suffix`` for each of ``suffixes``: the file naming ``processor_type`` with that suffix.

    Class attributes:
        model_type: The model type written to ``config.json``.
        processor_type: The ``image_processor_type`` our processor reports (the name without a
            ``Fast``/``Pil`` suffix; default: ``processor_class``'s name).
        processor_class: Our processor's exact class (``None``: not checked).
        preprocessor: The ``preprocessor_config.json`` as checkpoints write it (naming its type).
        variants: Case name -> keys of ``preprocessor`` changed.
        minimal_keys: Keys of the ``minimal`` case's file (``()``: no such case).
        suffixes: Suffixes transformers writes after ``processor_type`` (``Fast``: transformers 4's torchvision
            class, ``Pil``: 5's PIL class), which name the same processor: a case each, ``<suffix>-suffix``.
        fallback_error: Where the model type has no declared processor: a regular expression the refusal of a
            file naming no type must match (there is then no ``model-type-fallback`` case).
        reference_processor_class: Name of transformers' processor class (``transformers.<name>``; default:
            its PIL class of ``processor_type``, ``<type>Pil``, where it has one, else ``<type>``).
        reference_options: Arguments of transformers' processor (``None``: the case's file without its type).
        requires: Modules the reference needs (e.g. ``"torchvision"``); a case is skipped without them.
        image_sizes: ``(height, width)`` of the random RGB test images (see :meth:`images`).
        image_seed: Seed of the images.
        batched: Pass the images in one call (else one call an image).
        expected_shape: Shape of every ``pixel_values`` (``None``: only equal to the reference's).
        tolerance: Bound of ``max|ours - reference|`` of ``pixel_values``: one, or one an image (unbatched).
        reference_only_outputs: Outputs of the reference that ours does not return (such as the original
            images); every other output must be in both.
        mean_tolerance: Bound of the mean absolute difference (``None``: not checked).
        rounding_fraction: The fraction of values differing by more than 1e-5 must be below it (where two
            libraries round a resized 8-bit pixel apart, rarely; ``None``: not checked).
        expected_attributes: Attribute name -> value our processor must hold.
        description: What our processor's ``describe()`` must return (``None``: not checked).
        variant_settings: Case name -> class attributes above overridden for that case (e.g.
            ``{"upsampled": {"expected_shape": (2, 3, 160, 120)}}``).
    """

    model_type: ClassVar[str] = ""
    processor_type: ClassVar[str] = ""
    processor_class: ClassVar[type[Any] | None] = None
    preprocessor: ClassVar[dict[str, Any]] = {}
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    minimal_keys: ClassVar[tuple[str, ...]] = ()
    suffixes: ClassVar[tuple[str, ...]] = ()
    fallback_error: ClassVar[str | None] = None
    reference_processor_class: ClassVar[str] = ""
    reference_options: ClassVar[dict[str, Any] | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    image_sizes: ClassVar[tuple[tuple[int, int], ...]] = ((75, 101),)
    image_seed: ClassVar[int] = 0
    batched: ClassVar[bool] = False
    expected_shape: ClassVar[tuple[int, ...] | None] = None
    tolerance: ClassVar[float | tuple[float, ...]] = 1e-5
    reference_only_outputs: ClassVar[tuple[str, ...]] = ()
    mean_tolerance: ClassVar[float | None] = None
    rounding_fraction: ClassVar[float | None] = None
    expected_attributes: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str | None] = None
    variant_settings: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.processor_type and cls.processor_class is not None:
            cls.processor_type = cls.processor_class.__name__
        # The refusal check exists only where the declaration expects a refusal (rather than being skipped).
        name = "test_file_naming_no_type_is_refused"
        if cls.fallback_error is None:
            setattr(cls, name, None)
        elif getattr(cls, name) is None:
            setattr(cls, name, getattr(ProcessorParity, name))
        for case, overrides in cls.variant_settings.items():
            unknown = sorted(set(overrides) - set(vars(ProcessorParity)))
            if case not in cls.cases() or unknown:
                raise TypeError(f"{cls.__name__}.variant_settings[{case!r}]: not a case or unknown settings {unknown}")

    @classmethod
    def cases(cls) -> list[str]:
        """The case names, in order: ``named``, ``model-type-fallback``, ``minimal``, ``variants``, suffixes."""
        names = ["named"]
        if cls.fallback_error is None:
            names.append("model-type-fallback")
        if cls.minimal_keys:
            names.append("minimal")
        return names + list(cls.variants) + [f"{suffix}-suffix" for suffix in cls.suffixes]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise ``processor_variant`` with :meth:`cases`."""
        if "processor_variant" in metafunc.fixturenames:
            metafunc.parametrize("processor_variant", self.cases())

    def setting(self, name: str, variant: str) -> Any:
        """The class attribute ``name`` as ``variant_settings`` sets it for ``variant``."""
        return self.variant_settings.get(variant, {}).get(name, getattr(self, name))

    def file(self, variant: str) -> dict[str, Any]:
        """The ``preprocessor_config.json`` contents of ``variant``."""
        if variant == "named":
            return dict(self.preprocessor)
        if variant == "model-type-fallback":
            return {key: value for key, value in self.preprocessor.items() if key != _TYPE_KEY}
        if variant == "minimal":
            return {_TYPE_KEY: self.processor_type, **{key: self.preprocessor[key] for key in self.minimal_keys}}
        if variant in self.variants:
            return {**self.preprocessor, **self.variants[variant]}
        return {**self.preprocessor, _TYPE_KEY: self.processor_type + variant.removesuffix("-suffix")}

    def write(self, directory: Path, data: dict[str, Any]) -> Path:
        """Write a checkpoint folder: ``config.json`` naming ``model_type``, and ``data`` as its preprocessor."""
        (directory / "config.json").write_text(json.dumps({"model_type": self.model_type}))
        (directory / "preprocessor_config.json").write_text(json.dumps(data))
        return directory

    def load(self, directory: Path, variant: str) -> Any:
        """Our processor of ``variant``, written to ``directory`` and loaded by ``AutoImageProcessor``."""
        return AutoImageProcessor.from_pretrained(self.write(directory, self.file(variant)))

    def reference(self, variant: str) -> Any:
        """transformers' processor of ``variant``."""
        options = self.setting("reference_options", variant)
        if options is None:
            options = {key: value for key, value in self.file(variant).items() if key != _TYPE_KEY}
        return reference_class(self.reference_name())(**options)

    def reference_name(self) -> str:
        """The name of transformers' processor class: ``reference_processor_class`` or its default."""
        if self.reference_processor_class:
            return self.reference_processor_class
        pil = self.processor_type + "Pil"
        return pil if hasattr(importlib.import_module("transformers"), pil) else self.processor_type

    def images(self, variant: str) -> list[Any]:
        """The test images of ``variant``: random 8-bit RGB images of ``image_sizes`` (override for others)."""
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(self.setting("image_seed", variant))
        sizes = self.setting("image_sizes", variant)
        return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for height, width in sizes]

    def compare(self, ours: Any, reference: Any, variant: str) -> list[float]:
        """Run both processors on the images of ``variant`` and assert they agree (see the class docstring).

        Returns:
            The largest absolute difference of ``pixel_values``, a call.
        """
        images = self.images(variant)
        calls = [images] if self.setting("batched", variant) else [[image] for image in images]
        tolerance = self.setting("tolerance", variant)
        bounds = list(tolerance) if isinstance(tolerance, tuple) else [tolerance] * len(calls)
        assert len(bounds) == len(calls), f"tolerance gives {len(bounds)} bounds for {len(calls)} calls"
        shape, mean_bound = self.setting("expected_shape", variant), self.setting("mean_tolerance", variant)
        fraction = self.setting("rounding_fraction", variant)
        worst = []
        for batch, bound in zip(calls, bounds, strict=True):
            argument = batch if len(batch) > 1 else batch[0]
            expected, actual = reference(argument, return_tensors="pt"), ours(argument, return_tensors="pt")
            assert sorted(actual) == sorted(set(expected) - set(self.reference_only_outputs))
            mine, theirs = actual["pixel_values"], expected["pixel_values"]
            assert mine.shape == theirs.shape, (tuple(mine.shape), tuple(theirs.shape))
            if shape is not None:
                assert tuple(mine.shape) == tuple(shape)
            difference = (mine - theirs).abs()
            assert difference.max().item() <= bound, difference.max().item()
            if mean_bound is not None:
                assert difference.mean().item() < mean_bound, difference.mean().item()
            if fraction is not None:
                assert (difference > 1e-5).float().mean().item() < fraction
            for key in sorted(set(actual) - {"pixel_values"}):
                assert actual[key].dtype == expected[key].dtype and torch.equal(actual[key], expected[key]), key
            worst.append(difference.max().item())
        return worst

    def test_checkpoint_processor_matches_transformers(self, tmp_path: Path, processor_variant: str) -> None:
        for module in self.requires:
            pytest.importorskip(module)
        ours = self.load(tmp_path, processor_variant)
        assert isinstance(ours, ImageProcessor)
        assert ours.image_processor_type == self.processor_type
        if self.processor_class is not None:
            assert type(ours) is self.processor_class
        for name, value in self.setting("expected_attributes", processor_variant).items():
            assert getattr(ours, name) == value, name
        description = self.setting("description", processor_variant)
        if description is not None:
            assert ours.describe() == description
        self.compare(ours, self.reference(processor_variant), processor_variant)

    def test_file_naming_no_type_is_refused(self, tmp_path: Path) -> None:
        self.write(tmp_path, self.file("model-type-fallback"))
        with pytest.raises(ConfigError, match=self.fallback_error or ""):
            AutoImageProcessor.from_pretrained(tmp_path)


class BitProcessorParity(ProcessorParity):
    """:class:`ProcessorParity` of the ImageNet ``BitImageProcessor`` file that DINOv2-style checkpoints save
    (shortest edge, bicubic, centre crop, ImageNet statistics), with sizes 64/56 instead of 256/224.

    A subclass sets ``model_type`` (whose plugin must declare ``BitImageProcessor`` as its processor).
    """

    processor_type = "BitImageProcessor"
    preprocessor = imagenet_preprocessor(
        "BitImageProcessor",
        size={"shortest_edge": 64},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 56, "width": 56},
        do_convert_rgb=True,
    )
    expected_shape = (1, 3, 56, 56)


class FixedSizeProcessorParity(ProcessorParity):
    """:class:`ProcessorParity` of a processor that resizes every image to its file's ``size`` (``height`` and
    ``width``, as RT-DETR's, PVT's and UVDoc's do): a larger and a smaller image of other aspect ratios run in one
    call, and each case's ``pixel_values`` is ``(2, 3, height, width)`` of that case's file (``expected_shape``
    where a case's file names no ``size``, or where ``variant_settings`` sets it)."""

    image_sizes = ((75, 101), (40, 30))
    batched = True

    def setting(self, name: str, variant: str) -> Any:
        """As :meth:`ProcessorParity.setting`, with ``expected_shape`` from the case file's ``size``."""
        if name != "expected_shape" or name in self.variant_settings.get(variant, {}):
            return super().setting(name, variant)
        size = self.file(variant).get("size")
        if size is None:
            return super().setting(name, variant)
        batch = len(self.setting("image_sizes", variant)) if self.setting("batched", variant) else 1
        return (batch, 3, size["height"], size["width"])
