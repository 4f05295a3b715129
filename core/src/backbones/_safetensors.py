"""Read safetensors files memory-mapped, validating the header before any tensor is used.

Tensors are zero-copy views of a private (copy-on-write) memory map: pages are read from disk when
touched and the file is never modified. Every structural problem (truncation, a header that lies about
offsets or sizes, an unknown dtype) is a :class:`CheckpointError` naming the file and the fault.
"""

from __future__ import annotations

import json
import math
import mmap
from pathlib import Path
from typing import Any

import torch

from ._errors import CheckpointError

__all__ = ["SafetensorsFile", "TensorInfo"]

_MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2"),
    ("U16", "uint16"),
    ("U32", "uint32"),
    ("U64", "uint64"),
):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)


class _DuplicateKeyError(ValueError):
    """A JSON object names a key twice (``json`` would silently keep the last)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


class TensorInfo:
    """Where one tensor lies in a safetensors file."""

    __slots__ = ("dtype", "end", "shape", "start")

    def __init__(self, dtype: torch.dtype, shape: tuple[int, ...], start: int, end: int) -> None:
        self.dtype = dtype
        self.shape = shape
        self.start = start
        self.end = end


class SafetensorsFile:
    """A validated safetensors file.

    Args:
        path: The ``.safetensors`` file.

    Raises:
        CheckpointError: When the file is missing, truncated or malformed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                prefix = handle.read(8)
                if len(prefix) < 8:
                    raise self._error(f"is {size} bytes long, too short to be a safetensors file")
                header_size = int.from_bytes(prefix, "little")
                if header_size < 2 or header_size > min(size - 8, _MAX_HEADER_BYTES):
                    raise self._error(
                        f"declares a {header_size}-byte header in a {size}-byte file: it is truncated or not safetensors"
                    )
                raw_header = handle.read(header_size)
        except OSError as error:
            raise CheckpointError(f"cannot read weights file {path}: {error}") from error
        try:
            header = json.loads(raw_header, object_pairs_hook=_unique_keys)
        except _DuplicateKeyError as error:
            raise self._error(
                f"has a header that names {error.args[0]!r} twice, so which data it means is ambiguous"
            ) from None
        except RecursionError:
            raise self._error("has a header nested too deeply to be a safetensors header") from None
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
            raise self._error(f"has a header that is not valid UTF-8 JSON ({error})") from None
        if not isinstance(header, dict):
            raise self._error("has a header that is not a JSON object")
        metadata = header.pop("__metadata__", None)
        self.metadata: dict[str, str] = metadata if isinstance(metadata, dict) else {}
        self._data_start = 8 + header_size
        data_size = size - self._data_start
        self.tensors: dict[str, TensorInfo] = {}
        for key, entry in header.items():
            self.tensors[key] = self._parse_entry(key, entry, data_size)
        self._check_layout()
        self._map: mmap.mmap | None = None

    def _check_layout(self) -> None:
        """Tensors must tile the data without overlapping: two tensors sharing bytes is a forged file."""
        previous: tuple[str, TensorInfo] | None = None
        for key, info in sorted(self.tensors.items(), key=lambda item: (item[1].start, item[1].end)):
            if previous is not None and info.start < previous[1].end:
                raise self._error(
                    f"lets tensors {previous[0]!r} (bytes {previous[1].start - self._data_start}-"
                    f"{previous[1].end - self._data_start}) and {key!r} (bytes {info.start - self._data_start}-"
                    f"{info.end - self._data_start}) overlap"
                )
            if info.end > info.start:
                previous = (key, info)

    def _error(self, message: str) -> CheckpointError:
        return CheckpointError(f"weights file {self.path} {message}; re-download or re-save the checkpoint")

    def _parse_entry(self, key: str, entry: Any, data_size: int) -> TensorInfo:
        if not isinstance(entry, dict):
            raise self._error(f"describes tensor {key!r} with {entry!r}, not an object")
        dtype_name, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype_name not in _DTYPES:
            raise self._error(f"gives tensor {key!r} the unsupported dtype {dtype_name!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise self._error(f"gives tensor {key!r} the invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise self._error(f"gives tensor {key!r} the invalid data_offsets {offsets!r}")
        dtype = _DTYPES[dtype_name]
        expected = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != expected:
            raise self._error(
                f"says tensor {key!r} ({dtype_name}, shape {shape}) spans {offsets[1] - offsets[0]} bytes, "
                f"but that shape needs {expected}"
            )
        if offsets[1] > data_size:
            raise self._error(
                f"is truncated: tensor {key!r} ends at byte {offsets[1]} of the data, which has only {data_size}"
            )
        return TensorInfo(dtype, tuple(shape), self._data_start + offsets[0], self._data_start + offsets[1])

    def keys(self) -> list[str]:
        """Tensor names in the file."""
        return list(self.tensors)

    def get_tensor(self, key: str) -> torch.Tensor:
        """Return tensor ``key`` as a zero-copy view of the memory-mapped file."""
        info = self.tensors[key]
        numel = math.prod(info.shape)
        if numel == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        if self._map is None:
            with self.path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        if info.start % info.dtype.itemsize:
            # Misaligned data cannot be viewed in place: copy just this tensor.
            raw = torch.frombuffer(self._map, dtype=torch.uint8, count=info.end - info.start, offset=info.start)
            return raw.clone().view(info.dtype).reshape(info.shape)
        flat = torch.frombuffer(self._map, dtype=info.dtype, count=numel, offset=info.start)
        return flat.reshape(info.shape)
