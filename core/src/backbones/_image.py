"""Image preprocessing: transformers' ``preprocessor_config.json`` pipelines on Pillow and NumPy.

A processor turns PIL images, NumPy arrays or torch tensors into the ``pixel_values`` a backbone takes:
optional RGB conversion, a resize (to a fixed size, or keeping the aspect ratio), a centre crop,
rescaling and normalisation. The results follow transformers' PIL-backend image processors (the
"slow" ones, ``backend="pil"``), which resize with Pillow exactly as this module does.

Pillow and NumPy come with ``pip install 'backbones-core[image]'``; torch is imported only to return
``return_tensors="pt"``. Importing this module needs neither Pillow nor NumPy, so ``backbones``'
lazy exports keep working without the extra; using a processor does.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ._errors import BackboneError, ConfigError, InputError, PluginError
from ._processor_families import (
    BICUBIC,
    BILINEAR,
    BOX,
    CLASS_FAMILIES,
    FAMILIES,
    FAMILY_NAMES,
    HAMMING,
    LANCZOS,
    NEAREST,
    RESCALE_FIRST,
    family_names_text,
)

try:
    import numpy as np
    from PIL import Image
except ImportError:  # the [image] extra is optional; require_image_extra() says what to install
    _HAVE_IMAGE_EXTRA = False
else:
    _HAVE_IMAGE_EXTRA = True

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PREPROCESSOR_CONFIG_NAME",
    "AutoImageProcessor",
    "ImageProcessor",
    "ProcessedImages",
    "checkpoint_image_processor",
    "require_image_extra",
]

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

from ._processor_families import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402 -- re-exported here

# Pillow's numbering, which preprocessor_config.json stores.
_FILTER_NAMES = {
    NEAREST: "nearest",
    LANCZOS: "lanczos",
    BILINEAR: "bilinear",
    BICUBIC: "bicubic",
    BOX: "box",
    HAMMING: "hamming",
}

_SIZE_KEY_SETS = (
    frozenset({"height", "width"}),
    frozenset({"shortest_edge"}),
    frozenset({"shortest_edge", "longest_edge"}),
    frozenset({"longest_edge"}),
)
_CROP_KEY_SETS = (frozenset({"height", "width"}),)

# ConvNeXt's rule: below this shortest edge it resizes to edge / crop_pct and crops; at or above, it warps.
_CONVNEXT_WARP_FROM = 384

# An image with this many channels along an axis is taken to have its channels there.
_CHANNEL_COUNTS = (1, 3, 4)

_PIL_INTENSITY_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I", "I;16", "F"})

_IMAGE_EXTRA_HINT = "image preprocessing needs Pillow and NumPy: pip install 'backbones-core[image]'"


def require_image_extra() -> None:
    """Raise :class:`BackboneError` naming the extra to install when Pillow or NumPy is missing."""
    if not _HAVE_IMAGE_EXTRA:
        raise BackboneError(_IMAGE_EXTRA_HINT)


# -- field validation -------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_SIZE_KEY_ORDER = ("height", "width", "shortest_edge", "longest_edge")


def _key_sets_text(key_sets: tuple[frozenset[str], ...]) -> str:
    texts = ["{" + ", ".join(repr(key) for key in _SIZE_KEY_ORDER if key in keys) + "}" for keys in key_sets]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


def _size_dict(name: str, value: Any, *, square_int: bool, key_sets: tuple[frozenset[str], ...]) -> dict[str, int]:
    """Normalise transformers' size forms (int, ``[height, width]``, dict) into a dict of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = {"height": value, "width": value} if square_int else {"shortest_edge": value}
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        size = {"height": value[0], "width": value[1]}
    elif isinstance(value, Mapping):
        size = dict(value)
    else:
        raise ConfigError(
            f"{name}={value!r} must be an int, [height, width] or a dict with keys {_key_sets_text(key_sets)}"
        )
    if frozenset(size) not in key_sets:
        raise ConfigError(f"{name}={value!r} is not supported: its keys must be {_key_sets_text(key_sets)}")
    for key, edge in size.items():
        if not isinstance(edge, int) or isinstance(edge, bool) or edge <= 0:
            raise ConfigError(f"{name}={value!r}: {key!r} must be a positive int")
    return size


def _channel_stats(name: str, value: Any) -> float | tuple[float, ...]:
    if _is_number(value):
        stats: float | tuple[float, ...] = float(value)
        values: tuple[float, ...] = (float(value),)
    elif isinstance(value, (list, tuple)) and value and all(_is_number(item) for item in value):
        stats = values = tuple(float(item) for item in value)
    else:
        raise ConfigError(f"{name}={value!r} must be a number or a non-empty list of numbers (one per channel)")
    if name == "image_std" and 0.0 in values:
        raise ConfigError(f"{name}={value!r} has a zero, and normalising divides by it")
    return stats


def _filter_number(value: Any) -> int:
    if isinstance(value, str) and value.lower() in _FILTER_NAMES.values():
        return next(number for number, name in _FILTER_NAMES.items() if name == value.lower())
    if isinstance(value, int) and not isinstance(value, bool) and value in _FILTER_NAMES:
        return int(value)
    choices = ", ".join(f"{number} ({name})" for number, name in _FILTER_NAMES.items())
    raise ConfigError(f"resample={value!r} is not a Pillow resampling filter; use one of {choices}")


# -- the processor ----------------------------------------------------------------------------------


class ProcessedImages(dict[str, Any]):
    """The processor's output, ``{"pixel_values": ...}``, so ``model(**inputs)`` works.

    ``inputs.pixel_values`` reads the entry and ``inputs.to(device)`` moves tensors, as with
    transformers' ``BatchFeature``.
    """

    @property
    def pixel_values(self) -> Any:
        """The preprocessed images: a ``(batch, channels, height, width)`` tensor or array, or a list."""
        return self["pixel_values"]

    def to(self, *args: Any, **kwargs: Any) -> ProcessedImages:
        """Return a copy with every tensor moved or cast by ``tensor.to(*args, **kwargs)``."""
        return ProcessedImages(
            {key: value.to(*args, **kwargs) if hasattr(value, "to") else value for key, value in self.items()}
        )


@dataclasses.dataclass(frozen=True)
class ImageProcessor:
    """Preprocess images for a backbone: RGB, resize, centre crop, rescale, normalise — in that order.

    The fields are those of transformers' ``preprocessor_config.json``. Built with no arguments, a
    processor applies backbones' documented defaults (what ``backbones extract`` uses for a checkpoint
    without a preprocessor config): RGB, resize to 224x224 with bilinear filtering, scale to [0, 1],
    normalise with the ImageNet mean and std. :meth:`AutoImageProcessor.from_pretrained` builds the
    processor a checkpoint describes instead.

    Sizes are ``{"height": H, "width": W}`` (a fixed size), ``{"shortest_edge": S}`` (keep the aspect
    ratio), ``{"shortest_edge": S, "longest_edge": L}`` (keep it, capping the longest edge) or
    ``{"longest_edge": L}``. An int ``size`` means ``{"height": n, "width": n}``, or
    ``{"shortest_edge": n}`` when ``default_to_square`` is false, as in transformers.

    Args:
        do_convert_rgb: Convert to 3-channel RGB; transparency is composited onto white.
        do_resize: Resize to ``size``.
        size: Target size (see above).
        resample: Pillow filter for resizing, a number (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic,
            4 box, 5 hamming) or its name.
        default_to_square: How an int ``size`` is read.
        crop_pct: ConvNeXt's rule, when set (it needs ``size={"shortest_edge": S}``): below 384,
            resize the shortest edge to ``int(S / crop_pct)`` and centre-crop SxS; at 384 or more,
            resize to SxS.
        do_center_crop: Centre-crop to ``crop_size`` after resizing; an image smaller than the crop is
            padded with zeros (before rescaling), as transformers does.
        crop_size: ``{"height": H, "width": W}`` (an int means a square).
        do_rescale: Multiply the pixel values by ``rescale_factor``.
        rescale_factor: Usually 1/255, mapping 8-bit values to [0, 1].
        do_normalize: Subtract ``image_mean`` and divide by ``image_std``, per channel.
        image_mean: One value per channel, or one number for all.
        image_std: One value per channel, or one number for all.
        image_processor_type: The transformers class these settings came from (informational).

    A plugin implements a processor of its own as a subclass decorated with
    ``@dataclasses.dataclass(frozen=True)``: its field defaults are the defaults of keys its
    ``preprocessor_config.json`` leaves out, it may add fields (read from that file too), it may
    override :meth:`postprocess`, and it may set the class attribute ``rescale_before_resize`` (scale to
    [0, 1] right after the RGB step, so resizing and cropping filter floats, as DINOv3's processor does).
    A field named ``do_pad`` is the subclass's to implement; without one, ``do_pad=true`` is refused.

    Raises:
        ConfigError: A field has an unusable value, or a step is on without what it needs.

    Example:
        >>> processor = ImageProcessor(size={"height": 64, "width": 64})      # doctest: +SKIP
        >>> inputs = processor(image, return_tensors="pt")                       # doctest: +SKIP
        >>> model(**inputs).feature_maps                                         # doctest: +SKIP
    """

    do_convert_rgb: bool = True
    do_resize: bool = True
    size: dict[str, int] | None = dataclasses.field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = BILINEAR
    default_to_square: bool = True
    crop_pct: float | None = None
    do_center_crop: bool = False
    crop_size: dict[str, int] | None = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: float | tuple[float, ...] | None = IMAGENET_MEAN
    image_std: float | tuple[float, ...] | None = IMAGENET_STD
    image_processor_type: str | None = None

    rescale_before_resize: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for flag in (
            "do_convert_rgb",
            "do_resize",
            "default_to_square",
            "do_center_crop",
            "do_rescale",
            "do_normalize",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag}={getattr(self, flag)!r} must be true or false")
        normalised: dict[str, Any] = {"resample": _filter_number(self.resample)}
        if self.size is not None:
            normalised["size"] = _size_dict(
                "size", self.size, square_int=self.default_to_square, key_sets=_SIZE_KEY_SETS
            )
        elif self.do_resize:
            raise ConfigError("do_resize is true but size is missing; give size or set do_resize to false")
        if self.crop_pct is not None:
            if not _is_number(self.crop_pct) or self.crop_pct <= 0:
                raise ConfigError(f"crop_pct={self.crop_pct!r} must be a positive number")
            if self.do_resize and "shortest_edge" not in normalised["size"]:
                raise ConfigError(
                    f"crop_pct (ConvNeXt's resize rule) needs size={{'shortest_edge': ...}}, got size={self.size!r}"
                )
            normalised["crop_pct"] = float(self.crop_pct)
        if self.crop_size is not None:
            normalised["crop_size"] = _size_dict("crop_size", self.crop_size, square_int=True, key_sets=_CROP_KEY_SETS)
        elif self.do_center_crop:
            raise ConfigError(
                "do_center_crop is true but crop_size is missing; give crop_size or set do_center_crop to false"
            )
        if not _is_number(self.rescale_factor):
            raise ConfigError(f"rescale_factor={self.rescale_factor!r} must be a number")
        normalised["rescale_factor"] = float(self.rescale_factor)
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None:
                normalised[name] = _channel_stats(name, value)
            elif self.do_normalize:
                raise ConfigError(f"do_normalize is true but {name} is missing; give it or set do_normalize to false")
        mean, std = normalised.get("image_mean"), normalised.get("image_std")
        if isinstance(mean, tuple) and isinstance(std, tuple) and len(mean) != len(std):
            raise ConfigError(f"image_mean={mean} and image_std={std} must have as many values")
        if self.image_processor_type is not None and not isinstance(self.image_processor_type, str):
            raise ConfigError(f"image_processor_type={self.image_processor_type!r} must be a string")
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    # -- public API -------------------------------------------------------------------------------

    def __call__(
        self,
        images: Any,
        return_tensors: Literal["pt", "np"] | None = None,
        *,
        input_data_format: Literal["channels_first", "channels_last"] | None = None,
        **overrides: Any,
    ) -> ProcessedImages:
        """Preprocess one image or a batch.

        Args:
            images: A PIL image, a NumPy array or a torch tensor — ``(H, W)``, ``(C, H, W)`` or
                ``(H, W, C)`` with 1, 3 or 4 channels, uint8 or float — a 4-D batch of those, or a list
                of images. Float values are on the 0-255 scale of 8-bit images (``do_rescale`` applies
                to them too); pass ``do_rescale=False`` for float images already in [0, 1].
            return_tensors: ``"pt"`` for a torch tensor, ``"np"`` for a NumPy array (both
                ``(batch, channels, height, width)`` float32, so every image must end up the same
                size), or ``None`` for a list of ``(channels, height, width)`` arrays.
            input_data_format: Where arrays hold their channels, when the shape leaves it ambiguous
                (by default the first axis if it has 1, 3 or 4 entries, else the last).
            **overrides: Fields to change for this call, e.g. ``do_convert_rgb=True``.

        Returns:
            ``{"pixel_values": ...}`` (a :class:`ProcessedImages`).

        Raises:
            TypeError: An image is not a PIL image, array or tensor, or an override is not a field.
            ValueError: An image is empty, has an unsupported shape, dtype or value range, has a
                channel count the normalisation does not fit, or the batch cannot be stacked.
        """
        require_image_extra()
        processor = self.replace(**overrides) if overrides else self
        if return_tensors not in (None, "pt", "np"):
            raise InputError(f"return_tensors={return_tensors!r} must be 'pt', 'np' or None")
        if input_data_format not in (None, "channels_first", "channels_last"):
            raise InputError(
                f"input_data_format={input_data_format!r} must be 'channels_first', 'channels_last' or None"
            )
        arrays = []
        for index, image in enumerate(_image_list(images)):  # a loop, not a comprehension: warnings' stacklevel
            arrays.append(processor._preprocess(image, index, input_data_format))
        return processor.batch_outputs(arrays, return_tensors)

    def replace(self, **changes: Any) -> ImageProcessor:
        """Return a copy with ``changes`` applied (and validated).

        Raises:
            TypeError: A name in ``changes`` is not a field.
        """
        field_names = _field_names(type(self))
        unknown = sorted(set(changes) - field_names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {unknown[0]!r}; its fields are {sorted(field_names)}")
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line saying what the processor does, e.g. ``RGB, resize to 224x224 (bilinear), ...``.

        Sizes read height x width.
        """
        steps = ["RGB" if self.do_convert_rgb else "channels as given"]
        if self.do_rescale and self.rescale_before_resize:
            steps.append(self._describe_rescale())
        if self.do_resize and self.size is not None:
            steps.append(self._describe_resize(self.size))
        else:
            steps.append("native size")
        if self.do_center_crop and self.crop_size is not None:
            steps.append(f"centre-crop {self.crop_size['height']}x{self.crop_size['width']}")
        if self.do_rescale and not self.rescale_before_resize:
            steps.append(self._describe_rescale())
        if self.do_normalize:
            steps.append(f"normalise with mean {self.image_mean} and std {self.image_std}")
        return ", ".join(steps)

    def _describe_rescale(self) -> str:
        return (
            "scale to [0, 1]" if math.isclose(self.rescale_factor, 1 / 255) else f"multiply by {self.rescale_factor:g}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a ``preprocessor_config.json`` dictionary (transformers reads it back)."""
        data = dataclasses.asdict(self)
        for name in ("image_mean", "image_std"):
            if isinstance(data[name], tuple):
                data[name] = list(data[name])
        if data["crop_pct"] is None:
            del data["crop_pct"]
        if data["image_processor_type"] is None:
            del data["image_processor_type"]
        return data

    # -- pipeline ---------------------------------------------------------------------------------

    def _describe_resize(self, size: dict[str, int]) -> str:
        method = _FILTER_NAMES[self.resample]
        if self.crop_pct is not None:
            edge = size["shortest_edge"]
            if edge >= _CONVNEXT_WARP_FROM:
                return f"resize to {edge}x{edge} ({method})"
            return (
                f"resize the shortest edge to {int(edge / self.crop_pct)} and centre-crop {edge}x{edge} "
                f"(ConvNeXt crop_pct {self.crop_pct:g}, {method})"
            )
        if "height" in size:
            return f"resize to {size['height']}x{size['width']} ({method})"
        if "shortest_edge" in size and "longest_edge" in size:
            return f"resize the shortest edge to {size['shortest_edge']}, the longest to at most {size['longest_edge']} ({method})"
        if "shortest_edge" in size:
            return f"resize the shortest edge to {size['shortest_edge']} ({method})"
        return f"resize the longest edge to {size['longest_edge']} ({method})"

    def _preprocess(self, image: Any, index: int, input_data_format: str | None) -> NDArray[Any]:
        pixels = _to_channels_last(image, index, input_data_format, rgb=self.do_convert_rgb)
        if self.do_rescale and pixels.dtype.kind == "f" and pixels.min() >= 0 and pixels.max() <= 1:
            warnings.warn(
                f"image {index} is a float image with values in [0, 1], and do_rescale multiplies it by "
                f"{self.rescale_factor:g}; if it is already scaled, pass do_rescale=False",
                UserWarning,
                stacklevel=3,
            )
        if self.do_convert_rgb:
            pixels = _to_rgb(pixels, index, full_scale=255.0 if self.do_rescale else 1.0)
        if self.do_rescale and self.rescale_before_resize:
            pixels = self._rescale(pixels)
        if self.do_resize and self.size is not None:
            pixels = self._resize(pixels)
        if self.do_center_crop and self.crop_size is not None:
            pixels = _center_crop(pixels, self.crop_size["height"], self.crop_size["width"])
        if self.do_rescale and not self.rescale_before_resize:
            pixels = self._rescale(pixels)
        elif pixels.dtype.kind != "f":
            pixels = pixels.astype(np.float32)
        if self.do_normalize:
            assert self.image_mean is not None and self.image_std is not None
            channels = pixels.shape[-1]
            mean = _per_channel("image_mean", self.image_mean, channels, index)
            std = _per_channel("image_std", self.image_std, channels, index)
            pixels = (pixels - np.asarray(mean, dtype=pixels.dtype)) / np.asarray(std, dtype=pixels.dtype)
        planar = pixels.astype(np.float32, copy=False).transpose(2, 0, 1)
        return np.ascontiguousarray(self.postprocess(planar), dtype=np.float32)

    def _rescale(self, pixels: NDArray[Any]) -> NDArray[np.float32]:
        # Scaled in float64 and stored as float32, as transformers does, so the results agree to the bit.
        return (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)

    def postprocess(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """The last step, on each image as a ``(channels, height, width)`` float32 array: none here.

        A plugin's own processor (a subclass, see ``image_processor_classes`` in docs/plugins.md)
        overrides it to add a step its architecture needs, e.g. reversing the channel order.
        """
        return pixels

    def batch_outputs(self, arrays: list[NDArray[np.float32]], return_tensors: str | None) -> ProcessedImages:
        """The outputs of one call from its processed images (``(channels, height, width)`` float32 arrays):
        ``pixel_values`` here, stacked as ``return_tensors`` asks.

        A processor that works on the whole batch (a detector's, padding the images to one size and adding a
        ``pixel_mask``) overrides it.

        Raises:
            ValueError: ``return_tensors`` is set and the images differ in size.
        """
        return ProcessedImages(pixel_values=_pack(arrays, return_tensors))

    def resize_image(self, pixels: NDArray[Any], height: int, width: int) -> NDArray[Any]:
        """Resize one ``(height, width, channels)`` image to ``height`` x ``width`` with ``resample``.

        The output size comes from ``size`` (and ``crop_pct``); this is only the interpolation, done as
        transformers' PIL processors do (Pillow, whose filters antialias when shrinking). A plugin's own
        processor overrides it when its transformers class interpolates otherwise.
        """
        return _resize(pixels, height, width, self.resample)

    def _resize(self, pixels: NDArray[Any]) -> NDArray[Any]:
        assert self.size is not None
        height, width = pixels.shape[:2]
        if self.crop_pct is not None:
            edge = self.size["shortest_edge"]
            if edge >= _CONVNEXT_WARP_FROM:
                return self.resize_image(pixels, edge, edge)
            resized = self.resize_image(pixels, *_shortest_edge_size(height, width, int(edge / self.crop_pct)))
            return _center_crop(resized, edge, edge)
        return self.resize_image(pixels, *_target_size(self.size, height, width))


@dataclasses.dataclass(frozen=True)
class _RescaleFirstImageProcessor(ImageProcessor):
    """The pipeline of a core family in ``RESCALE_FIRST``: scale to [0, 1] before resizing."""

    rescale_before_resize: ClassVar[bool] = True


def _field_names(cls: type[ImageProcessor]) -> frozenset[str]:
    return frozenset(item.name for item in dataclasses.fields(cls))


def _per_channel(name: str, stats: float | tuple[float, ...], channels: int, index: int) -> tuple[float, ...]:
    if isinstance(stats, float):
        return (stats,) * channels
    if len(stats) != channels:
        hint = " (or set do_convert_rgb=True to make it RGB)" if channels in (1, 2, 4) and len(stats) == 3 else ""
        raise InputError(
            f"image {index} has {channels} channel(s) but {name} has {len(stats)} values: give image_mean and "
            f"image_std one value per channel, as a model loaded with num_channels={channels} needs{hint}"
        )
    return stats


# -- sizes ------------------------------------------------------------------------------------------
# The integer truncations below are transformers' (and torchvision's), kept so sizes agree exactly.


def _shortest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


def _capped_size(height: int, width: int, shortest: int, longest: int) -> tuple[int, int]:
    short_side, long_side = float(min(height, width)), float(max(height, width))
    unrounded: float | None = None
    if long_side / short_side * shortest > longest:
        unrounded = longest * short_side / long_side
        shortest = round(unrounded)
    if min(height, width) == shortest:
        return height, width
    scale_from = unrounded if unrounded is not None else shortest
    if width < height:
        return int(scale_from * height / width), shortest
    return shortest, int(scale_from * width / height)


def _longest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    if height >= width:
        return edge, int(edge * width / height)
    return int(edge * height / width), edge


def _target_size(size: dict[str, int], height: int, width: int) -> tuple[int, int]:
    if "height" in size:
        target = size["height"], size["width"]
    elif "shortest_edge" in size and "longest_edge" in size:
        target = _capped_size(height, width, size["shortest_edge"], size["longest_edge"])
    elif "shortest_edge" in size:
        target = _shortest_edge_size(height, width, size["shortest_edge"])
    else:
        target = _longest_edge_size(height, width, size["longest_edge"])
    # A very thin image can round an edge down to 0 pixels; keep one.
    return max(1, target[0]), max(1, target[1])


# -- pixels -----------------------------------------------------------------------------------------


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    return torch is not None and isinstance(value, torch.Tensor)


def _is_image(value: Any) -> bool:
    return isinstance(value, (Image.Image, np.ndarray)) or _is_tensor(value)


def _tensor_to_numpy(tensor: Any) -> NDArray[Any]:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # NumPy has no bfloat16
    return np.asarray(tensor.numpy())


def _image_list(images: Any) -> list[Any]:
    if _is_tensor(images):
        images = _tensor_to_numpy(images)
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise InputError(
            f"an image array must have 2 (H, W), 3 (C, H, W or H, W, C) or 4 (batch) dimensions, got shape {images.shape}"
        )
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("no images given: the list is empty")
        for index, image in enumerate(images):
            if not _is_image(image):
                raise TypeError(
                    f"image {index} of the list is a {type(image).__name__}; expected a PIL image, a NumPy array or a torch tensor"
                )
        return list(images)
    hint = " (open files with PIL.Image.open first)" if isinstance(images, (str, os.PathLike)) else ""
    raise TypeError(
        f"images must be a PIL image, a NumPy array, a torch tensor or a list of them, got {type(images).__name__}{hint}"
    )


def _to_channels_last(image: Any, index: int, input_data_format: str | None, *, rgb: bool) -> NDArray[Any]:
    """An ``(H, W, C)`` array of uint8 or float, from any accepted image (``rgb``: RGB conversion follows)."""
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise InputError(f"image {index} is empty: it is {image.width}x{image.height} pixels")
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and image.width * image.height > limit:
            # Checked before decoding: a file's header can declare any size (a decompression bomb).
            raise InputError(
                f"image {index} is {image.width}x{image.height} pixels, more than Pillow's limit of {limit} "
                "(PIL.Image.MAX_IMAGE_PIXELS, which guards against decompression bombs); resize it first, or raise "
                "the limit if you trust the file"
            )
        try:
            return _pil_to_array(image, rgb=rgb)
        except (OSError, SyntaxError) as error:  # what Pillow raises for truncated or corrupt data
            raise InputError(
                f"image {index} ({image.format or 'in memory'}, {image.mode}, {image.width}x{image.height}) cannot be "
                f"decoded: {error}; the file is truncated or corrupt"
            ) from error
    array = _tensor_to_numpy(image) if _is_tensor(image) else image
    if array.size == 0:
        raise InputError(f"image {index} is empty: its shape {array.shape} has a zero-length axis")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        if _channels_first(array.shape, index, input_data_format):
            array = np.moveaxis(array, 0, -1)
    else:
        raise InputError(
            f"image {index} has shape {array.shape}; an image must be (H, W), (C, H, W) or (H, W, C) "
            "(a batch is a 4-D array or a list)"
        )
    kind = array.dtype.kind
    if kind in "ui":
        if array.min() < 0 or array.max() > 255:
            raise InputError(
                f"image {index} is an integer ({array.dtype}) image with values in [{array.min()}, {array.max()}]; "
                "integer images must hold 8-bit values, 0 to 255"
            )
        return array.astype(np.uint8, copy=False)
    if kind == "f":
        return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)
    raise InputError(f"image {index} has dtype {array.dtype}; use uint8 or float pixel values")


def _channels_first(shape: tuple[int, ...], index: int, input_data_format: str | None) -> bool:
    if input_data_format is not None:
        return input_data_format == "channels_first"
    # transformers' rule, ambiguity included: a leading axis of 1, 3 or 4 entries wins.
    if shape[0] in _CHANNEL_COUNTS:
        return True
    if shape[-1] in _CHANNEL_COUNTS:
        return False
    raise InputError(
        f"cannot tell which axis of image {index} (shape {shape}) holds the channels: expected 1, 3 or 4 channels "
        "first (C, H, W) or last (H, W, C); pass input_data_format='channels_first' or 'channels_last'"
    )


def _pil_to_array(image: Image.Image, *, rgb: bool) -> NDArray[Any]:
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if rgb:
        # Pillow applies the mode's own meaning (palette, colour key, CMYK, 16-bit, ...); _to_rgb then
        # composites the alpha onto white.
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif image.mode not in _PIL_INTENSITY_MODES:
        # Palette indices, 1-bit, CMYK, YCbCr, ... are not intensities: go through RGB(A) or L.
        image = image.convert("L" if image.mode == "1" else "RGBA" if has_alpha else "RGB")
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def _to_rgb(pixels: NDArray[Any], index: int, full_scale: float) -> NDArray[Any]:
    """Three channels; an alpha channel (the last of 2 or 4) is composited onto white."""
    channels = pixels.shape[-1]
    if channels in (2, 4):
        alpha = pixels[..., -1:].astype(np.float64) / (255.0 if pixels.dtype == np.uint8 else full_scale)
        if alpha.min() < 0 or alpha.max() > 1:
            raise InputError(
                f"image {index} has alpha values outside [0, {full_scale:g}], the range of float images when "
                f"do_rescale is {'on' if full_scale == 255 else 'off'}"
            )
        white = 255.0 if pixels.dtype == np.uint8 else full_scale
        blended = alpha * pixels[..., :-1] + (1 - alpha) * white
        # PIL's alpha_composite onto opaque white gives exactly these rounded values for 8-bit images.
        pixels = np.round(blended).astype(np.uint8) if pixels.dtype == np.uint8 else blended.astype(pixels.dtype)
        channels -= 1
    if channels == 1:
        return np.repeat(pixels, 3, axis=-1)
    if channels == 3:
        return pixels
    raise InputError(f"image {index} has {pixels.shape[-1]} channels and cannot be converted to RGB")


def _holds_bytes(pixels: NDArray[Any]) -> bool:
    """Whether a float image holds only whole numbers in 0-255, which survive 8-bit resizing unchanged."""
    return bool(np.all((pixels >= 0) & (pixels <= 255) & (pixels == np.floor(pixels))))


def _resize(pixels: NDArray[Any], height: int, width: int, resample: int) -> NDArray[Any]:
    channels = pixels.shape[-1]
    if channels <= 4 and (pixels.dtype == np.uint8 or _holds_bytes(pixels)):
        # One multi-band Pillow image, as transformers makes: Pillow weights RGBA and LA by their alpha.
        band_image = Image.fromarray(pixels.astype(np.uint8)[..., 0] if channels == 1 else pixels.astype(np.uint8))
        resized = np.asarray(band_image.resize((width, height), resample=resample))
        return resized[:, :, None] if resized.ndim == 2 else resized
    # Other float images keep their precision: each channel is resized as a 32-bit float image
    # (transformers would truncate [0, 1] images to 8 bits here and refuse other ranges). Images of
    # more than 4 channels, which Pillow has no mode for, are resized channel by channel too.
    dtype = np.uint8 if pixels.dtype == np.uint8 else np.float32
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[..., channel], dtype=dtype)).resize(
                (width, height), resample=resample
            )
        )
        for channel in range(channels)
    ]
    return np.stack(planes, axis=-1)


def _center_crop(pixels: NDArray[Any], height: int, width: int) -> NDArray[Any]:
    """Crop the centre; along an axis shorter than the crop, pad with zeros (the extra zero row or
    column, if the padding is odd, goes before the image, as in transformers)."""
    image_height, image_width = pixels.shape[:2]
    if image_height >= height and image_width >= width:
        top, left = (image_height - height) // 2, (image_width - width) // 2
        return pixels[top : top + height, left : left + width]
    canvas = np.zeros((height, width, pixels.shape[-1]), dtype=pixels.dtype)
    rows = _overlap(image_height, height)
    columns = _overlap(image_width, width)
    canvas[rows[1], columns[1]] = pixels[rows[0], columns[0]]
    return canvas


def _overlap(length: int, target: int) -> tuple[slice, slice]:
    """(source, destination) slices along one axis of a centre crop of ``length`` to ``target``."""
    if length >= target:
        start = (length - target) // 2
        return slice(start, start + target), slice(0, target)
    offset = (target - length + 1) // 2
    return slice(0, length), slice(offset, offset + length)


_RESIZE_TO_STACK = (
    "resize them to one size (size={'height': ..., 'width': ...} or a centre crop), or pass return_tensors=None "
    "for a list"
)


def _pack(arrays: list[NDArray[Any]], return_tensors: str | None, *, hint: str = _RESIZE_TO_STACK) -> Any:
    """The arrays as a list, or stacked into one batch array (``"np"``) or tensor (``"pt"``)."""
    if return_tensors is None:
        return arrays
    shapes = sorted({array.shape for array in arrays})
    if len(shapes) > 1:
        raise InputError(f"cannot stack the images into one batch: they end up with different shapes {shapes}; {hint}")
    batch = np.stack(arrays)
    if return_tensors == "np":
        return batch
    import torch

    return torch.from_numpy(batch)


# -- processor types: core's families and the plugins' own -----------------------------------------


def _declared_type(data: Mapping[str, Any]) -> str | None:
    """The processor class a preprocessor config names, in transformers' base spelling."""
    declared = data.get("image_processor_type")
    if isinstance(declared, str) and declared:
        # "...Fast" (transformers 4's torchvision classes) and "...Pil" (5's PIL classes) share settings,
        # for core's families and for the processors plugins implement alike.
        for suffix in ("Fast", "Pil"):
            base = declared[: -len(suffix)]
            if declared.endswith(suffix) and declared not in FAMILY_NAMES and _is_known_type(base):
                return base
        return declared
    legacy = data.get("feature_extractor_type")
    if isinstance(legacy, str) and legacy:
        return legacy.replace("FeatureExtractor", "ImageProcessor")
    return None


def _is_known_type(processor_type: str) -> bool:
    """Whether ``processor_type`` is one of core's families or a processor a plugin implements."""
    from ._registry import get_registry

    return processor_type in FAMILY_NAMES or get_registry().image_processor(processor_type) is not None


def _supported_types_text() -> str:
    from ._registry import get_registry

    text = family_names_text()
    plugins = get_registry().image_processors()
    if plugins:
        text += "; installed plugins add " + ", ".join(
            f"{name} ({processor.distribution})" for name, processor in plugins.items()
        )
    return text


def _plugin_processor_class(processor_type: str) -> type[ImageProcessor] | None:
    """The class a plugin implements for ``processor_type``, checked; None when no plugin has one."""
    from ._registry import get_registry

    registration = get_registry().image_processor(processor_type)
    if registration is None:
        return None
    cls = registration.load_class()
    if not (isinstance(cls, type) and issubclass(cls, ImageProcessor) and dataclasses.is_dataclass(cls)):
        raise PluginError(
            f"the image processor {processor_type!r} of {registration.distribution}, {registration.target!r}, is "
            f"{cls!r}, not a subclass of backbones.ImageProcessor; derive it from ImageProcessor with "
            "@dataclasses.dataclass(frozen=True)"
        )
    return cls


def _class_defaults(cls: type[ImageProcessor]) -> dict[str, Any]:
    """The field defaults of a processor class: what a key missing from its preprocessor config takes."""
    defaults: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
    return defaults


def _build(processor_type: str, data: Mapping[str, Any], overrides: Mapping[str, Any]) -> ImageProcessor:
    cls: type[ImageProcessor] = _RescaleFirstImageProcessor if processor_type in RESCALE_FIRST else ImageProcessor
    defaults = FAMILIES.get(processor_type)
    if defaults is not None:
        # Only ConvNeXt's family reads crop_pct; the others ignore a stray one, as transformers does.
        ignored = {"image_processor_type"} | ({"crop_pct"} if defaults["crop_pct"] is None else set())
    elif processor_type in CLASS_FAMILIES:
        module_name, _, class_name = CLASS_FAMILIES[processor_type].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        defaults, ignored = _class_defaults(cls), {"image_processor_type"}
    else:
        plugin_class = _plugin_processor_class(processor_type)
        if plugin_class is None:
            raise ConfigError(
                f"image_processor_type {processor_type!r} is not supported; backbones implements "
                f"{_supported_types_text()} (preprocess with that transformers class, or build an ImageProcessor "
                "with the same steps)"
            )
        cls, defaults, ignored = plugin_class, _class_defaults(plugin_class), {"image_processor_type"}
    field_names = _field_names(cls)
    if data.get("do_pad") and "do_pad" not in field_names:
        raise ConfigError("do_pad=true (padding the images of a batch to one size) is not supported; set it to false")
    fields = dict(defaults)
    fields.update({key: value for key, value in data.items() if key in field_names - ignored and value is not None})
    unknown = sorted(set(overrides) - field_names)
    if unknown:
        raise TypeError(f"unexpected argument {unknown[0]!r}; the image processor's fields are {sorted(field_names)}")
    fields.update(overrides)
    fields["image_processor_type"] = processor_type
    return cls(**fields)


def _fallback_type(model_type: Any) -> str | None:
    """The processor the plugin of ``model_type`` declares for checkpoints whose config names none."""
    from ._errors import UnknownModelTypeError
    from ._registry import get_registry

    if not isinstance(model_type, str):
        return None
    try:
        return get_registry().get(model_type).image_processor
    except UnknownModelTypeError:
        return None


class AutoImageProcessor:
    """Build the :class:`ImageProcessor` that a checkpoint's ``preprocessor_config.json`` describes.

    Supported ``image_processor_type`` values: core's families ``ViTImageProcessor`` (Swin, Swinv2,
    DiNAT, ViT), ``ConvNextImageProcessor`` (ConvNeXt, ConvNeXt V2, ResNet, RegNet),
    ``BitImageProcessor`` (BiT, DINOv2, FocalNet) and ``BeitImageProcessor`` (BEiT, Data2Vec-Vision),
    and any processor an installed plugin implements (``image_processor_classes`` of its
    registration). Legacy ``feature_extractor_type`` names and the ``...Fast`` / ``...Pil`` variants
    map to the same families. A file that names no type gets the processor the plugin of
    ``config.json``'s ``model_type`` declares (``image_processor`` of its registration).

    Example:
        >>> processor = AutoImageProcessor.from_pretrained("microsoft/swin-tiny-patch4-window7-224")  # doctest: +SKIP
        >>> inputs = processor(image, return_tensors="pt")                                            # doctest: +SKIP
        >>> model(**inputs).feature_maps[0].shape                                                     # doctest: +SKIP
        torch.Size([1, 96, 56, 56])
    """

    def __init__(self) -> None:
        raise TypeError("AutoImageProcessor is not instantiated; use AutoImageProcessor.from_pretrained or .from_dict")

    @staticmethod
    def from_dict(data: Mapping[str, Any], **overrides: Any) -> ImageProcessor:
        """Return the processor a ``preprocessor_config.json`` dictionary describes.

        Args:
            data: The dictionary; it must name ``image_processor_type`` (or the legacy
                ``feature_extractor_type``). Keys it lacks, or sets to null, take that type's defaults.
            **overrides: Fields to set, e.g. ``do_convert_rgb=True``.

        Raises:
            ConfigError: The type is missing or not supported, or a value is unusable.
            PluginError: The plugin processor of that type cannot be imported or is no
                :class:`ImageProcessor` subclass, or two distributions implement it (the message
                names them).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a preprocessor config must be a dict, got {type(data).__name__}")
        processor_type = _declared_type(data)
        if processor_type is None:
            raise ConfigError(
                f"the preprocessor config names no image_processor_type, so its pipeline is unknown (keys: {sorted(data)}); "
                f"add one of {_supported_types_text()}"
            )
        return _build(processor_type, data, overrides)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike[str], **kwargs: Any) -> ImageProcessor:
        """Read ``preprocessor_config.json`` from a directory or hub id and return its processor.

        Args:
            name_or_path: Local directory or hub repository id (cached files are used without a
                network call).
            **kwargs: Hub options (``revision``, ``cache_dir``, ``local_files_only``, ``token``,
                ``force_download``) and fields to override, e.g. ``do_convert_rgb=True``.

        Raises:
            CheckpointError: The directory, repository or ``preprocessor_config.json`` does not exist
                (or is not cached while offline).
            ConfigError: The file is not valid JSON, names no supported processor type, or holds an
                unusable value; the message names the file.
            PluginError: The processor comes from a plugin that cannot provide it (see
                :meth:`from_dict`), or the plugin of ``config.json``'s model type failed to load.
        """
        from ._hub import HUB_OPTIONS, resolve_file

        hub = {key: kwargs.pop(key) for key in list(kwargs) if key in HUB_OPTIONS}
        path = resolve_file(name_or_path, PREPROCESSOR_CONFIG_NAME, **hub)
        assert path is not None
        return _from_file(name_or_path, path, hub, kwargs)


def _from_file(
    name_or_path: str | os.PathLike[str], path: os.PathLike[str], hub: dict[str, Any], overrides: dict[str, Any]
) -> ImageProcessor:
    from pathlib import Path

    from ._files import read_json
    from ._hub import resolve_file

    data = read_json(Path(path))
    processor_type = _declared_type(data)
    if processor_type is None:
        from ._config import CONFIG_NAME

        config_path = resolve_file(name_or_path, CONFIG_NAME, optional=True, **hub)
        model_type = read_json(config_path).get("model_type") if config_path is not None else None
        processor_type = _fallback_type(model_type)
        if processor_type is None:
            found = (
                f"config.json's model_type {model_type!r} has no known one (no installed plugin declares an "
                "image_processor for it)"
                if config_path
                else "there is no config.json"
            )
            raise ConfigError(
                f"{path} names no image_processor_type and {found}, so the preprocessing is unknown; "
                f'add "image_processor_type": one of {_supported_types_text()}'
            )
    try:
        return _build(processor_type, data, overrides)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def checkpoint_image_processor(name_or_path: str | os.PathLike[str], **hub: Any) -> ImageProcessor | None:
    """The processor of a checkpoint, or ``None`` when it has no ``preprocessor_config.json``.

    A hub file that is not cached while offline counts as absent.

    Raises:
        CheckpointError: The directory or repository does not exist.
        ConfigError: The file exists but cannot be used (see :meth:`AutoImageProcessor.from_pretrained`).
    """
    from ._hub import resolve_file

    path = resolve_file(name_or_path, PREPROCESSOR_CONFIG_NAME, optional=True, **hub)
    return None if path is None else _from_file(name_or_path, path, hub, {})
