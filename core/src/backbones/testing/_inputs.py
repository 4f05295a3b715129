"""Conformance checks of hostile forward inputs: every outcome is a correct result or the project's own error.

Mixed into :class:`backbones.testing.BackboneConformance`; it uses that class's ``build``, ``inputs`` and
``run`` helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import torch
from torch import Tensor

from .._errors import BackboneError, InputError

if TYPE_CHECKING:
    from .._backbone import Backbone

__all__ = ["InputConformance"]

# Odd, tiny and non-divisible sizes: each runs, or is refused with an InputError naming the size.
HOSTILE_SIZES = ((1, 1), (7, 9), (15, 17), (33, 31))


class InputConformance:
    """Forward inputs no user should get a torch traceback for (see issue "hostile configs", item 3)."""

    if TYPE_CHECKING:
        batch_size: ClassVar[int]

        def build(self, seed: int = 0, **overrides: Any) -> Backbone: ...
        def inputs(self, size: tuple[int, int] | None = None, seed: int = 1) -> Tensor: ...
        def run(self, model: Backbone, pixels: Tensor, **options: Any) -> Any: ...

    def test_malformed_pixels_are_input_errors(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            with pytest.raises(InputError, match=r"batch size 0"):
                model(pixels[:0])
            with pytest.raises(InputError, match=r"must be a 4-D \(batch, channels, height, width\) tensor"):
                model(pixels[0])
            with pytest.raises(InputError, match=r"has dtype torch.uint8; .* takes floating-point pixels"):
                self.run(model, (pixels * 40).clamp(0, 255).to(torch.uint8))
            channels = pixels.shape[1]
            wrong = torch.cat([pixels, pixels[:, :1]], dim=1)
            with pytest.raises(InputError, match=rf"pixel_values has {channels + 1} channels"):
                self.run(model, wrong)

    def test_non_contiguous_and_non_finite_pixels_compute(self) -> None:
        model = self.build()
        pixels = self.inputs()
        with torch.no_grad():
            expected = self.run(model, pixels).feature_maps
            # A transposed view (strides of a (B, C, W, H) tensor): the same numbers, not contiguous.
            view = pixels.transpose(2, 3).contiguous().transpose(2, 3)
            assert not view.is_contiguous()
            for got, want in zip(self.run(model, view).feature_maps, expected):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            # NaN and inf propagate (a correct result for such input), with the shapes of a finite input.
            poisoned = pixels.clone()
            poisoned[0, :, 0, 0] = float("nan")
            poisoned[-1, :, -1, -1] = float("inf")
            maps = self.run(model, poisoned).feature_maps
        assert [tuple(fmap.shape) for fmap in maps] == [tuple(fmap.shape) for fmap in expected]

    def test_half_precision_pixels_run_in_the_weights_dtype(self) -> None:
        """fp16/bf16 pixels into a float32 model give the float32 result of the same (rounded) pixels."""
        model = self.build()
        pixels = self.inputs()
        for dtype in (torch.float16, torch.bfloat16):
            rounded = pixels.to(dtype)
            with torch.no_grad():
                expected = self.run(model, rounded.float()).feature_maps
                got = self.run(model, rounded).feature_maps
            for fmap, want in zip(got, expected):
                assert fmap.dtype == torch.float32, f"{dtype}: a {fmap.dtype} map from a float32 model"
                torch.testing.assert_close(fmap, want, rtol=0, atol=0)

    def test_odd_sizes_compute_or_name_the_size(self) -> None:
        model = self.build()
        for height, width in HOSTILE_SIZES:
            pixels = self.inputs((height, width))
            try:
                with torch.no_grad():
                    maps = self.run(model, pixels).feature_maps
            except BackboneError as error:
                assert isinstance(error, InputError), f"{height}x{width}: {type(error).__name__}: {error}"
                message = str(error)
                assert f"{height}" in message and f"{width}" in message, (
                    f"{height}x{width}: the error {message!r} names no size"
                )
                continue
            assert len(maps) == len(model.out_features), f"{height}x{width}"
            for fmap, channels in zip(maps, model.channels):
                assert fmap.dim() == 4 and fmap.shape[:2] == (self.batch_size, channels), f"{height}x{width}"
