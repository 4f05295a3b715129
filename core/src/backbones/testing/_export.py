"""A model exported with dynamic image sizes (torch.export, and ONNX through onnxruntime), against eager."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from .. import Backbone
from ._parity import assert_parity
from ._tensors import assert_close_maps

__all__ = ["assert_exports_with_dynamic_size"]


def assert_exports_with_dynamic_size(
    model: Backbone,
    example: Tensor,
    inputs: Iterable[Tensor],
    *,
    size_range: tuple[int, int],
    onnx_path: Path | None = None,
    export_tolerance: float = 1e-5,
    onnx_tolerance: float = 1e-4,
    scaled: bool = False,
) -> None:
    """Assert ``model`` (in eval mode) exports with dynamic height and width and keeps its maps.

    ``torch.export.export(model, (example,))`` with height and width dynamic over ``size_range``, and with
    ``onnx_path`` the ONNX program saved there and run by onnxruntime, must give the eager maps at each of
    ``inputs`` (sizes other than ``example``'s).

    Args:
        model: The model to export (such as a reparameterised one, which the conformance kit does not export).
        example: The example input of the export.
        inputs: The compared inputs.
        size_range: ``(min, max)`` height and width of the export.
        onnx_path: Where to save the ONNX program (``None``: no ONNX check).
        export_tolerance: Bound for the exported program.
        onnx_tolerance: Bound for onnxruntime.
        scaled: Compare with :func:`~backbones.testing.assert_parity`'s rule (the difference over
            ``max(1, max|eager|)``), else by the absolute difference.
    """
    from torch.export import Dim

    low, high = size_range
    dims = {2: Dim("height", min=low, max=high), 3: Dim("width", min=low, max=high)}
    program = torch.export.export(model, (example,), dynamic_shapes={"pixel_values": dims})
    session = None
    if onnx_path is not None:
        import onnxruntime

        onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
        assert onnx_program is not None
        onnx_program.save(str(onnx_path))
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def compare(got: list[Tensor], eager: list[Tensor], tolerance: float) -> None:
        if scaled:
            assert_parity(got, eager, tolerance)
        else:
            assert_close_maps(got, eager, atol=tolerance)

    for batch in inputs:
        with torch.no_grad():
            eager = list(model(batch).feature_maps)
            compare(list(program.module()(batch).feature_maps), eager, export_tolerance)
        if session is not None:
            outputs = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
            compare([torch.from_numpy(array) for array in outputs], eager, onnx_tolerance)
