"""Checkpoint loading and saving: the one place that maps checkpoint keys onto a backbone.

Loading reads ``config.json``, picks the backbone class through the registry, builds the model with
its parameters on the meta device (no throwaway random init), validates every checkpoint tensor
against the model before anything is materialised, then fills the model from memory-mapped
safetensors. Keys the model needs but the checkpoint lacks are initialised as the reference does and
reported; checkpoint keys the model does not use are reported too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._auto import checkpoint_config_data, config_with_overrides
from ._config import CONFIG_NAME
from ._errors import BackboneError, CheckpointError, ConfigError, WeightsMismatchError
from ._files import atomic_write, atomic_write_text, read_json
from ._hub import resolve_file
from ._options import MAX_PARAMETERS_ENV, LoadOptions, check_config_overrides, parameter_limit
from ._safetensors import SafetensorsFile

if TYPE_CHECKING:
    from ._backbone import Backbone

__all__ = [
    "LoadReport",
    "adapt_input_channels",
    "build_backbone",
    "count_parameters",
    "load_pretrained",
    "report_unknown_fields",
    "save_checkpoint",
]

logger = logging.getLogger("backbones")

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAME = "pytorch_model.bin"
PICKLE_INDEX_NAME = "pytorch_model.bin.index.json"


@dataclass
class LoadReport:
    """What happened to each key when a checkpoint was loaded.

    Attributes:
        source: The checkpoint (directory or hub id).
        missing_keys: Model keys absent from the checkpoint; they were initialised as the reference does.
        unused_keys: Checkpoint keys the model does not use (e.g. a classifier head).
        prefix: How task-checkpoint keys were mapped (e.g. ``"resnet."`` removed), or ``""``.
        unknown_config_fields: Config fields that no code reads (kept for the round trip), each with the
            nearest valid field name; see ``BackboneConfig.unknown_fields``. They do not make a report unclean.
        adapted_keys: Checkpoint keys loaded into a weight of another shape, each with how (the input
            convolution of a checkpoint loaded with another ``num_channels``; see :func:`adapt_input_channels`).
            They are loaded, so they do not make a report unclean.
    """

    source: str
    missing_keys: list[str] = field(default_factory=list)
    unused_keys: list[str] = field(default_factory=list)
    prefix: str = ""
    unknown_config_fields: dict[str, str] = field(default_factory=dict)
    adapted_keys: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """True when every model key was loaded and every checkpoint key was used."""
        return not self.missing_keys and not self.unused_keys

    def __str__(self) -> str:
        lines = [f"checkpoint {self.source}"]
        if self.prefix:
            lines.append(f"  key prefix mapped: {self.prefix}")
        if self.missing_keys:
            lines.append(f"  initialised (not in checkpoint): {_abbreviate(self.missing_keys)}")
        if self.unused_keys:
            lines.append(f"  unused checkpoint keys: {_abbreviate(self.unused_keys)}")
        if self.adapted_keys:
            adapted = [f"{key} ({how})" for key, how in self.adapted_keys.items()]
            lines.append(f"  adapted to the model: {_abbreviate(adapted)}")
        if self.unknown_config_fields:
            unknown = [f"{key} (did you mean {nearest}?)" for key, nearest in self.unknown_config_fields.items()]
            lines.append(f"  unknown config fields (kept, no effect): {_abbreviate(unknown)}")
        return "\n".join(lines)


def _abbreviate(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


# -- building without initialising ----------------------------------------------------------------

# The build swaps in its own ``nn.Module.register_parameter`` for as long as a build runs in any thread
# (installed by the outermost build, put back by the last one to finish), and only the threads that are
# building see a difference: their new parameters go to the meta device, every other thread's stay
# real. Buffers are never touched, so index tables that modules compute in ``__init__`` stay real.
# torch's own ``with torch.device("meta")`` cannot do this: it would put the buffers on meta too.

_meta_state = threading.local()
_patch_lock = threading.Lock()
_active_builds = 0
_TORCH_REGISTER_PARAMETER = nn.Module.register_parameter
_original_register_parameter: Any = _TORCH_REGISTER_PARAMETER


def _register_parameter_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
    if getattr(_meta_state, "forwarding", False):
        # A wrapper installed over ours during a build (and so left in place) calls ours again: end there.
        _TORCH_REGISTER_PARAMETER(self, name, param)
        return
    budget: _ParameterBudget | None = getattr(_meta_state, "budget", None)
    if param is not None and budget is not None:
        budget.add(param.numel())
    if param is not None and building_on_meta() and param.device.type != "meta":
        param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
    _meta_state.forwarding = True
    try:
        _original_register_parameter(self, name, param)
    finally:
        _meta_state.forwarding = False


def _enter_build() -> None:
    global _active_builds, _original_register_parameter
    with _patch_lock:
        current = nn.Module.__dict__.get("register_parameter")
        if _active_builds == 0 and current is not _register_parameter_on_meta:
            _original_register_parameter = current
            nn.Module.register_parameter = _register_parameter_on_meta  # type: ignore[method-assign]
        _active_builds += 1


def _exit_build() -> None:
    global _active_builds
    with _patch_lock:
        _active_builds -= 1
        # Someone who replaced ours meanwhile keeps theirs (ours, which it may call, just forwards).
        if _active_builds == 0 and nn.Module.__dict__.get("register_parameter") is _register_parameter_on_meta:
            nn.Module.register_parameter = _original_register_parameter  # type: ignore[method-assign]


def building_on_meta() -> bool:
    """Whether this thread is inside :func:`parameters_on_meta` (a model being built for a load)."""
    return bool(getattr(_meta_state, "depth", 0))


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within this block (in this thread), new module parameters are created on the meta device.

    Buffers stay real, so index tables that modules compute in ``__init__`` survive. Parameter init
    then costs nothing, and a load fills every parameter from the checkpoint. Blocks nest, and run in
    several threads at once; ``nn.Module.register_parameter`` is torch's own again once none is running.
    """
    _enter_build()
    _meta_state.depth = getattr(_meta_state, "depth", 0) + 1
    try:
        yield
    finally:
        _meta_state.depth -= 1
        _exit_build()


# -- the parameter limit ----------------------------------------------------------------------------

_COUNT_SECONDS = 2.0
"""How long a build that went over the limit goes on counting (on the meta device) for the estimate."""
_SMALL_TENSOR = 1 << 16
"""Elements below which a tensor made while counting past the limit stays real (index tables, schedules)."""


class _OverLimit(Exception):
    """A build went over its parameter limit (caught by the build and reported as a ConfigError)."""

    def __init__(self, count: int, complete: bool) -> None:
        super().__init__(count)
        self.count = count
        self.complete = complete


class _ParameterBudget:
    """Counts the parameters a build registers, and refuses to allocate past the limit.

    Below the limit every parameter is counted as it is registered. The first one that goes over it
    puts the build into counting mode: from then on every tensor a factory makes (bar small ones) is
    made on the meta device, and the count goes on until the build ends or :data:`_COUNT_SECONDS` have
    passed, so the error can say how big the model would be without allocating it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.refused = 0  # elements of tensors made on meta because they did not fit
        self.over_since: float | None = None

    def add(self, numel: int) -> None:
        self.count += numel
        if self.count > self.limit and self.over_since is None:
            self.over_since = time.monotonic()
        self.check_time()

    def check_time(self) -> None:
        if self.over_since is not None and time.monotonic() - self.over_since > _COUNT_SECONDS:
            raise _OverLimit(self.estimate, complete=False)

    def room_for(self, numel: int) -> bool:
        """Whether a tensor of ``numel`` elements may be allocated for real (small ones always may: the
        parameter count alone decides the limit, exactly, as parameters are registered)."""
        return numel < _SMALL_TENSOR or (self.over_since is None and self.count + numel <= self.limit)

    @property
    def estimate(self) -> int:
        """The parameters counted, or with the tensors refused when the parameters alone are not over."""
        return self.count if self.count > self.limit else self.count + self.refused


def _requested_numel(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """Elements the factory call ``func(*args, **kwargs)`` would allocate, or None if it is no factory call."""
    name = getattr(func, "__name__", "")
    if func in _SIZE_FACTORIES:
        size = kwargs.get("size", args[1:] if name.startswith("new_") else args)
        if name.startswith("new_"):  # Tensor.new_empty(self, size)
            pass
        elif name == "randint":  # randint(high, size) or randint(low, high, size)
            size = kwargs.get("size", next((a for a in args if isinstance(a, (tuple, list, torch.Size))), ()))
        elif name in ("full", "new_full") and "size" not in kwargs:
            size = args[1:2] if name == "new_full" else args[:1]
    elif name == "eye":
        size = (args[0], args[1] if len(args) > 1 and isinstance(args[1], int) else args[0]) if args else ()
    elif name in ("arange", "linspace", "logspace"):
        return _range_numel(name, args, kwargs)
    else:
        return None
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = size[0]
    numel = 1
    for item in size:
        if not isinstance(item, int):
            return None  # symbolic or odd sizes: not ours to judge
        numel *= max(item, 0)
    return numel


def _range_numel(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    try:
        if name == "arange":
            start, end, step = (0, numbers[0], 1) if len(numbers) == 1 else (*numbers[:2], (numbers[2:] or [1])[0])
            return max(int((end - start) / step) + 1, 0) if step else None
        steps = kwargs.get("steps", numbers[2] if len(numbers) > 2 else None)
        return int(steps) if isinstance(steps, int) else None
    except (IndexError, TypeError, ValueError, OverflowError):
        return None


_SIZE_FACTORIES = frozenset(
    {
        torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
        torch.empty_strided, torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones,
        torch.Tensor.new_full,
    }
)  # fmt: skip


_GUARDED = _SIZE_FACTORIES | {torch.eye, torch.arange, torch.linspace, torch.logspace}


class _AllocationGuard(TorchFunctionMode):
    """Within a counted build, a factory call that would go past the limit makes a meta tensor instead
    (counting mode) or ends the build (before the limit is reached)."""

    def __init__(self, budget: _ParameterBudget) -> None:
        super().__init__()
        self.budget = budget

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func not in _GUARDED:  # every tensor operation passes here: keep the common case cheap
            return func(*args, **(kwargs or {}))
        kwargs = dict(kwargs or {})
        numel = _requested_numel(func, args, kwargs)
        if numel is not None and str(kwargs.get("device", "")) != "meta" and not self.budget.room_for(numel):
            if self.budget.over_since is None:  # one tensor bigger than what is left: over the limit now
                self.budget.over_since = time.monotonic()
                self.budget.refused += numel
            self.budget.check_time()
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


@contextlib.contextmanager
def _counted(limit: int) -> Iterator[_ParameterBudget]:
    """Count the parameters built in this block (this thread) and refuse allocations past ``limit``."""
    budget = _ParameterBudget(limit)
    previous = getattr(_meta_state, "budget", None)
    _meta_state.budget = budget
    try:
        with _AllocationGuard(budget):
            yield budget
    finally:
        _meta_state.budget = previous


class _TooBigError(ConfigError):
    """The model a config describes is bigger than the parameter limit."""


def _too_big(model_class: type[Backbone], source: object, count: int, complete: bool, limit: int) -> ConfigError:
    estimate = f"{_billions(count)} parameters" if complete else f"more than {_billions(count)} parameters"
    origin = f" from {source}" if source is not None else ""
    return _TooBigError(
        f"{model_class.__name__}{origin} would have {estimate} (counted on the meta device, nothing "
        f"allocated), above the limit of {_billions(limit)}: check the config's sizes; if the model is meant to "
        f"be this big, pass max_parameters={max(count * 2, limit + 1)} or set the environment variable "
        f"{MAX_PARAMETERS_ENV}"
    )


def _billions(count: int) -> str:
    return f"{count:,} ({count / 1e9:.3g} B)" if count >= 10**8 else f"{count:,}"


def count_parameters(model_class: type[Backbone], config: Any, *, max_parameters: int | None = None) -> int | None:
    """Build ``model_class(config)`` with its parameters on the meta device and count them.

    Args:
        model_class: The backbone class.
        config: Its config.
        max_parameters: The limit (default: ``BACKBONES_MAX_PARAMETERS``, else 20 billion).

    Returns:
        The number of parameters (nothing is allocated for them), or None when the model cannot be
        built (the real build then raises its own error).

    Raises:
        ConfigError: The model would have more than the limit; the message gives the estimate and how
            to raise the limit.
    """
    try:
        # Tensors a module makes before registering them as parameters (torch.randn for a class token)
        # draw from the global generator: put it back, so counting changes no random initialisation.
        with torch.random.fork_rng(devices=[]):
            return _build(model_class, config, None, max_parameters)[1]
    except _TooBigError:
        raise
    except BackboneError:
        return None


def build_backbone(model_class: type[Backbone], config: Any, *, max_parameters: int | None = None) -> Backbone:
    """``model_class(config)``, randomly initialised, once its unknown config fields are reported (see
    :func:`report_unknown_fields`) and its parameters counted within the limit (see :func:`count_parameters`).

    Raises:
        ConfigError: The model would be bigger than the limit.
    """
    report_unknown_fields(config, None, strict=False)
    count_parameters(model_class, config, max_parameters=max_parameters)
    return model_class(config)


_warned_fields: set[tuple[str, str]] = set()


def report_unknown_fields(config: Any, source: object, *, strict: bool) -> dict[str, str]:
    """Warn once per process about each unknown config field (see ``BackboneConfig.unknown_fields``).

    Returns:
        The unknown fields, each with the nearest valid field name.

    Raises:
        ConfigError: ``strict`` and there are unknown fields.
    """
    unknown = config.unknown_fields()
    if not unknown:
        return unknown
    described = "; ".join(f"{key!r} (did you mean {nearest!r}?)" for key, nearest in unknown.items())
    what = type(config).__name__ + (f" from {source}" if source is not None else "")
    message = (
        f"{what} has field(s) it does not know, kept for the round trip but without effect: {described}. "
        "Fix the spelling, or remove them if this architecture does not support them"
    )
    if strict:
        raise ConfigError(message + " (strict=True makes them an error)")
    fresh = [key for key in unknown if (type(config).__name__, key) not in _warned_fields]
    if fresh:
        _warned_fields.update((type(config).__name__, key) for key in fresh)
        warnings.warn(message, UserWarning, stacklevel=4)
    return unknown


def _build(
    model_class: type[Backbone], config: Any, source: object, max_parameters: int | None = None
) -> tuple[Backbone, int]:
    """Build ``model_class(config)`` with its parameters on the meta device; return it and its parameter count.

    The config was read from a file and checked for absurd numbers (``config_from_file``); an error the
    plugin raises while building (values that pass its validation but do not fit the architecture) is
    reported against that file instead of surfacing from deep inside the model code.

    Raises:
        ConfigError: Construction fails; the message names the config file and the original error. Or
            the model would have more than ``max_parameters`` parameters: they are counted as they are
            registered, and a tensor that would go past the limit is made on the meta device, so a
            hostile config cannot make the process allocate more than the limit.
    """
    limit = parameter_limit(max_parameters)
    budget: _ParameterBudget | None = None
    try:
        with parameters_on_meta(), _counted(limit) as budget:
            model = model_class(config)
    except _OverLimit as over:
        raise _too_big(model_class, source, over.count, over.complete, limit) from None
    except BackboneError:
        raise
    except Exception as error:
        if budget is not None and budget.over_since is not None:  # failed on a meta tensor while counting
            raise _too_big(model_class, source, budget.estimate, False, limit) from None
        raise ConfigError(
            f"cannot build {model_class.__name__} from {source} ({type(error).__name__}: {error}); "
            "its values do not fit the architecture: fix or regenerate config.json"
        ) from error
    if budget.over_since is not None:
        raise _too_big(model_class, source, budget.estimate, True, limit)
    return model, budget.count


# -- finding the weights --------------------------------------------------------------------------


_Index = tuple[Path, dict[str, str]]


def _resolve_weights(
    name_or_path: str | os.PathLike[str], hub: dict[str, Any], allow_pickle: bool
) -> tuple[str, list[Path], _Index | None]:
    """Return ``("safetensors" | "pickle", files, (index path, weight map) or None)``."""
    single = resolve_file(name_or_path, SAFETENSORS_NAME, optional=True, **hub)
    if single is not None:
        return "safetensors", [single], None
    index = resolve_file(name_or_path, SAFETENSORS_INDEX_NAME, optional=True, **hub)
    if index is not None:
        return "safetensors", *_resolve_shards(name_or_path, index, hub)
    for pickle_name in (PICKLE_NAME, PICKLE_INDEX_NAME):
        found = resolve_file(name_or_path, pickle_name, optional=True, **hub)
        if found is None:
            continue
        if not allow_pickle:
            raise CheckpointError(
                f"{name_or_path} has only {pickle_name}, a pickle checkpoint; unpickling can run arbitrary code, "
                "so it is refused. Convert it once to safetensors (load it in a trusted environment and call "
                "save_pretrained, or use `safetensors.torch.save_file`), or pass allow_pickle=True if you trust "
                "its source (it is then loaded with torch.load(weights_only=True))."
            )
        if pickle_name == PICKLE_NAME:
            return "pickle", [found], None
        return "pickle", *_resolve_shards(name_or_path, found, hub)
    raise CheckpointError(
        f"no weights found for {name_or_path}: looked for {SAFETENSORS_NAME}, {SAFETENSORS_INDEX_NAME} and {PICKLE_NAME}"
    )


def _resolve_shards(
    name_or_path: str | os.PathLike[str], index_path: Path, hub: dict[str, Any]
) -> tuple[list[Path], _Index]:
    """The shard files an index names, and ``(index path, weight map)`` to check them against."""
    index = read_json(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path} has no valid 'weight_map' (a mapping of tensor names to shard files)")
    shards = []
    for shard in sorted(set(weight_map.values())):
        if "/" in shard or "\\" in shard or shard.startswith(".."):
            raise CheckpointError(f"{index_path} names shard {shard!r}, which is not a plain file name")
        path = resolve_file(name_or_path, shard, optional=True, **hub)
        if path is None:
            raise CheckpointError(f"{index_path} names shard {shard!r}, which is missing from {name_or_path}")
        shards.append(path)
    return shards, (index_path, weight_map)


class _Checkpoint:
    """Every tensor of a (possibly sharded) checkpoint: shapes up front, data on demand."""

    def __init__(self, kind: str, files: list[Path]) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self._owners: dict[str, Any] = {}
        self._files: dict[str, str] = {}
        self._handles: dict[str, Any] = {}
        for path in files:
            if kind == "safetensors":
                source: Any = SafetensorsFile(path)
                shapes = {key: info.shape for key, info in source.tensors.items()}
                dtypes = {key: info.dtype for key, info in source.tensors.items()}
            else:
                try:
                    source = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except Exception as error:
                    raise CheckpointError(
                        f"cannot load pickle checkpoint {path} with weights_only=True: {error}"
                    ) from error
                if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
                    raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
                shapes = {key: tuple(value.shape) for key, value in source.items()}
                dtypes = {key: value.dtype for key, value in source.items()}
            for key, shape in shapes.items():
                if key in self.shapes:
                    raise CheckpointError(f"tensor {key!r} appears in more than one shard ({path})")
                self.shapes[key] = shape
                self.dtypes[key] = dtypes[key]
                self._owners[key] = source
                self._files[key] = path.name

    def check_index(self, index_path: Path, weight_map: dict[str, str]) -> None:
        """Every tensor a sharded checkpoint's index lists must be in the shard it names.

        Raises:
            CheckpointError: Naming the tensor and the shard; such a tensor would otherwise be silently
                initialised instead of loaded.
        """
        for key, shard in weight_map.items():
            if self._files.get(key) != shard:
                raise CheckpointError(
                    f"{index_path} says tensor {key!r} is in shard {shard!r}, which does not hold it; "
                    "the index and the shards are out of step: re-download or re-save the checkpoint"
                )

    def get(self, key: str) -> torch.Tensor:
        """Tensor ``key``: a zero-copy view of the memory-mapped file."""
        source = self._owners[key]
        return source.get_tensor(key) if isinstance(source, SafetensorsFile) else source[key]

    def nbytes(self, key: str) -> int:
        return math.prod(self.shapes[key]) * self.dtypes[key].itemsize

    def read(self, key: str, scratch: torch.Tensor) -> torch.Tensor:
        """Tensor ``key`` read from the file into ``scratch`` (bytes, at least :meth:`nbytes` long), for a
        tensor that is converted or moved; the result is valid until ``scratch`` is read into again.

        A view of the memory map would leave the pages it touched resident (counted in the process's
        memory) for as long as the file stays mapped, and a fresh tensor for each would fragment the heap
        with freed blocks: either way a converted load would hold the checkpoint and the converted model
        at once. Read into one reused buffer, only the biggest tensor is held twice.

        Raises:
            CheckpointError: The file changed since its header was read (it is shorter now).
        """
        source = self._owners[key]
        if not isinstance(source, SafetensorsFile):
            return source[key]
        info = source.tensors[key]
        tensor = scratch[: info.end - info.start].view(info.dtype).view(info.shape)
        if not tensor.numel():
            return tensor
        target: Any = scratch[: info.end - info.start].numpy()  # the tensor's bytes
        handle = self._handles.get(self._files[key])
        if handle is None:
            handle = self._handles[self._files[key]] = source.path.open("rb")
        handle.seek(info.start)
        if handle.readinto(target) != info.end - info.start:
            raise CheckpointError(
                f"weights file {source.path} is shorter than when its header was read (tensor {key!r}): "
                "it changed during the load; load it again"
            )
        return tensor

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


# -- key matching ---------------------------------------------------------------------------------


def _candidates(name: str, renames: list[tuple[re.Pattern[str], str]], base: str) -> list[tuple[str, tuple[str, ...]]]:
    """Model keys a checkpoint key may stand for, most literal first, each with how it was derived."""
    variants: list[tuple[str, tuple[str, ...]]] = [(name, ())]
    renamed = name
    for pattern, replacement in renames:
        renamed = pattern.sub(replacement, renamed)
    if renamed != name:
        variants.append((renamed, ("keys renamed",)))
    candidates = []
    for variant, how in variants:
        candidates.append((variant, how))
        if base and variant.startswith(base + "."):
            candidates.append((variant[len(base) + 1 :], (*how, f"'{base}.' removed")))
        elif base:
            candidates.append((f"{base}.{variant}", (*how, f"'{base}.' added")))
    return candidates


def _match_keys(
    model: Backbone,
    checkpoint_keys: list[str],
    checkpoint_prefix: str,
) -> tuple[dict[str, str], list[str], str]:
    """Map checkpoint keys to model keys; return ``(mapping, unused, how_keys_were_mapped)``."""
    model_keys = set(model.state_dict().keys())
    ignored = [re.compile(pattern) for pattern in model.ignored_checkpoint_keys]
    renames = [(re.compile(pattern), replacement) for pattern, replacement in model.checkpoint_key_renames]
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    unused: list[str] = []
    notes: set[str] = {f"'{checkpoint_prefix}' selected"} if checkpoint_prefix else set()
    for key in checkpoint_keys:
        if not key.startswith(checkpoint_prefix):
            unused.append(key)
            continue
        name = key[len(checkpoint_prefix) :]
        if any(pattern.search(name) for pattern in ignored):
            continue
        for candidate, how in _candidates(name, renames, model.base_model_prefix):
            if candidate in model_keys and candidate not in taken:
                mapping[key] = candidate
                taken.add(candidate)
                notes.update(how)
                break
        else:
            unused.append(key)
    return mapping, unused, ", ".join(sorted(notes))


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """An input convolution's (or linear layer's) weight for ``channels`` input channels instead of its own.

    The weight's dimension 1 holds its ``S`` input channels (3 for RGB). For one channel the filters are
    summed, so a grey image gives what the original gives on that image repeated ``S`` times. For other
    counts the channels are repeated cyclically (R, G, B, R, ...) and scaled by ``S / channels``, which keeps
    the response to an input that is equal in every channel (timm's ``adapt_input_conv`` rule).

    Args:
        weight: ``(out, S, ...)``.
        channels: The new number of input channels (1 or more).

    Returns:
        ``(out, channels, ...)``, of ``weight``'s dtype and device.
    """
    source = weight.shape[1]
    wide = weight.float()
    if channels == 1:
        adapted = wide.sum(dim=1, keepdim=True)
    else:
        adapted = wide[:, torch.arange(channels, device=weight.device) % source] * (source / channels)
    return adapted.to(weight.dtype)


def _input_weight_keys(model: Backbone, channels: int) -> list[str]:
    """State-dict keys of the weights that take the image's channels: the plugin's declaration
    (``input_channel_weights``), else the first convolution (or linear layer) with ``channels`` inputs."""
    declared = list(getattr(model, "input_channel_weights", ()))
    if declared:
        return declared
    for name, module in model.named_modules():
        convolution = isinstance(module, nn.modules.conv._ConvNd) and not module.transposed and module.groups == 1
        if (convolution and module.in_channels == channels) or (
            isinstance(module, nn.Linear) and module.in_features == channels
        ):
            return [f"{name}.weight" if name else "weight"]
    return []


def _channel_adaptations(
    model: Backbone,
    saved_config: Mapping[str, Any],
    mapping: dict[str, str],
    shapes: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, torch.Tensor],
) -> dict[str, str]:
    """Checkpoint keys of input weights saved for another ``num_channels`` than the model's, with how they
    are adapted; empty when the channel counts agree."""
    wanted = getattr(model.config, "num_channels", None)
    saved = saved_config.get("num_channels", 3)
    if not isinstance(wanted, int) or not isinstance(saved, int) or wanted == saved or wanted < 1:
        return {}
    inputs = set(_input_weight_keys(model, wanted))
    rule = "filters summed" if wanted == 1 else f"filters repeated cyclically, scaled by {saved}/{wanted}"
    adapted = {}
    for key, model_key in mapping.items():
        stored, target = shapes[key], tuple(expected[model_key].shape)
        if (
            model_key in inputs
            and len(stored) >= 2
            and (stored[1], target[1]) == (saved, wanted)
            and stored[:1] + stored[2:] == target[:1] + target[2:]
        ):
            adapted[key] = f"{saved} -> {wanted} input channels, {rule}"
    return adapted


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """The requested floating dtype; ``None`` means "auto": keep the checkpoint's."""
    if dtype is None:
        return torch.get_default_dtype()
    if dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype; use e.g. torch.float32, 'bfloat16' or 'auto'")
    return resolved


def _read_state(
    checkpoint: _Checkpoint,
    mapping: dict[str, str],
    expected: dict[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, torch.Tensor]:
    """The model's tensors from the checkpoint, converted to ``dtype`` and moved to ``device``.

    A tensor kept as it is (same dtype, CPU) is a zero-copy view of the memory-mapped file: the model's
    memory is the file's pages, read as they are used. A tensor that is converted or moved is read into
    fresh memory, converted, and its source freed before the next one, so the process never holds the
    checkpoint and the converted model at once. On the meta device nothing is read at all.
    """
    casts = {}
    for key, model_key in mapping.items():
        stored = checkpoint.dtypes[key]
        floating = dtype if dtype is not None else stored
        casts[key] = floating if stored.is_floating_point else expected[model_key].dtype
    if device.type == "meta":
        return {model_key: torch.empty(checkpoint.shapes[key], dtype=casts[key], device=device)
                for key, model_key in mapping.items()}  # fmt: skip
    converted = [key for key in mapping if casts[key] != checkpoint.dtypes[key] or device.type != "cpu"]
    scratch = torch.empty(max((checkpoint.nbytes(key) for key in converted), default=0), dtype=torch.uint8)
    state: dict[str, torch.Tensor] = {}
    for key, model_key in mapping.items():
        if key in converted:
            # A copy even where ``to`` would return its input: the next read overwrites the scratch.
            state[model_key] = checkpoint.read(key, scratch).to(device=device, dtype=casts[key], copy=True)
        else:
            state[model_key] = checkpoint.get(key)
    return state


def _initialise_missing(model: Backbone, loaded: set[str], device: torch.device, dtype: torch.dtype | None) -> None:
    """Materialise parameters still on meta and initialise their modules as the reference does.

    ``_init_weights`` initialises a whole module, so every tensor of that module that did come from the
    checkpoint (``loaded`` holds their state-dict keys) is put back afterwards.
    """
    for prefix, module in model.named_modules():
        meta = [name for name, p in module.named_parameters(recurse=False) if p.device.type == "meta"]
        if not meta:
            continue
        dot = f"{prefix}." if prefix else ""
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        kept = {name: t.detach().clone() for name, t in tensors if f"{dot}{name}" in loaded and name not in meta}
        for name in meta:
            old = getattr(module, name)
            target = dtype if dtype is not None else old.dtype
            empty = torch.empty_like(old, device=device, dtype=target)
            setattr(module, name, nn.Parameter(empty, requires_grad=old.requires_grad))
        with torch.no_grad():
            model._init_weights(module)
            for name, value in kept.items():
                getattr(module, name).copy_(value)


# -- public entry points --------------------------------------------------------------------------


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    options: LoadOptions | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    *,
    model_class: type[Backbone] | None = None,
) -> Backbone | tuple[Backbone, LoadReport]:
    """Load a backbone checkpoint; see :meth:`backbones.AutoBackbone.from_pretrained`.

    Args:
        name_or_path: Local directory, hub repository id, or a name a plugin loads.
        options: How to load (default: every option at its default).
        config_overrides: Config fields to override (and extras to set).
        model_class: Load into this class instead of the one ``config.json``'s ``model_type`` names.
    """
    options = options if options is not None else LoadOptions()
    if not isinstance(options, LoadOptions):
        raise TypeError(f"options must be a backbones.LoadOptions, got {type(options).__name__}")
    overrides = dict(config_overrides or {})
    hub = options.hub_kwargs()
    if options.use_timm_backbone and model_class is None:  # transformers' from_pretrained(name, use_timm_backbone=True)
        loaded = _load_from_name(name_or_path, options, overrides)
        if loaded is not None:
            return loaded
    try:
        config_path = resolve_file(name_or_path, CONFIG_NAME, **hub)
    except CheckpointError:
        # Not a checkpoint: a plugin may know the name (backbones-timm: a timm model name).
        loaded = _load_from_name(name_or_path, options, overrides) if model_class is None else None
        if loaded is None:
            raise
        return loaded
    assert config_path is not None
    data = checkpoint_config_data(config_path, options)
    model_type = data.get("model_type")
    if model_class is None:
        if not isinstance(model_type, str) or not model_type:
            raise ConfigError(
                f'{config_path} has no \'model_type\', so the architecture is unknown; add "model_type": "<type>" '
                "or load it with the plugin's backbone class"
            )
        from ._registry import get_registry

        model_class = get_registry().get(model_type).load_model_class()
    config = config_with_overrides(model_class.config_class, data, config_path, options, overrides)
    unknown_fields = report_unknown_fields(config, config_path, strict=options.strict)

    target_dtype = _parse_dtype(options.dtype)
    target_device = torch.device(options.device) if options.device is not None else torch.device("cpu")
    kind, files, index = _resolve_weights(name_or_path, hub, options.allow_pickle)
    checkpoint = _Checkpoint(kind, files)
    if index is not None:
        checkpoint.check_index(*index)

    model = _build(model_class, config, config_path, options.max_parameters)[0]
    mapping, unused, prefix_note = _match_keys(model, list(checkpoint.shapes), options.checkpoint_prefix)
    expected = model.state_dict()
    # A checkpoint for RGB loaded with num_channels=C: its input convolution is adapted, not refused.
    adapted = _channel_adaptations(model, data, mapping, checkpoint.shapes, expected)
    mismatched = [
        f"{key}: checkpoint {list(checkpoint.shapes[key])} vs model {list(expected[model_key].shape)}"
        for key, model_key in mapping.items()
        if checkpoint.shapes[key] != tuple(expected[model_key].shape) and key not in adapted
    ]
    # Float precision is converted (dtype=...), but integers for floats or floats for integers (a step
    # counter, an index table) mean the tensor is not what the model expects.
    mismatched += [
        f"{key}: checkpoint {checkpoint.dtypes[key]} vs model {expected[model_key].dtype}"
        for key, model_key in mapping.items()
        if checkpoint.dtypes[key].is_floating_point != expected[model_key].dtype.is_floating_point
    ]
    if mismatched:
        raise WeightsMismatchError(
            f"{len(mismatched)} tensor(s) of {name_or_path} do not fit {type(model).__name__} "
            f"(does config.json match the weights?): " + "; ".join(mismatched[:10])
        )
    report = LoadReport(
        source=os.fspath(name_or_path),
        missing_keys=sorted(set(expected) - set(mapping.values())),
        unused_keys=sorted(unused),
        prefix=prefix_note,
        unknown_config_fields=unknown_fields,
        adapted_keys=adapted,
    )
    if options.strict and not report.clean:
        raise WeightsMismatchError(f"strict loading of {name_or_path} failed:\n{report}")

    try:
        state = _read_state(checkpoint, mapping, expected, target_device, target_dtype)
    finally:
        checkpoint.close()
    for key in adapted:
        state[mapping[key]] = adapt_input_channels(state[mapping[key]], expected[mapping[key]].shape[1])
    model.load_state_dict(state, strict=False, assign=True)
    del state
    _initialise_missing(model, set(mapping.values()), target_device, target_dtype)
    model.to(device=target_device, dtype=target_dtype)
    model.eval()
    model._apply_config_freezing()  # after the weights: freeze_norm keeps the loaded statistics
    if report.missing_keys:
        logger.warning("%s", report)
    elif report.unused_keys or report.adapted_keys:
        logger.info("%s", report)
    return (model, report) if options.output_loading_info else model


def _load_from_name(name_or_path: str | os.PathLike[str], options: LoadOptions, overrides: dict[str, Any]) -> Any:
    """Ask the plugins' ``load_backbone_from_name`` hooks; None if no plugin knows the name."""
    if not isinstance(name_or_path, str):  # a Path is a directory, never a name
        return None
    from ._registry import get_registry

    # No config class is known yet, so only keywords that look like misspelt options are refused here;
    # the plugin validates the config overrides against its own config.
    check_config_overrides(overrides)
    registry = get_registry()
    registry.discover()
    # Plugins built for plugin API 1.0 take ``options``: one dict of the options and the overrides.
    legacy = {**options.as_dict(), **overrides}
    del legacy["use_timm_backbone"], legacy["max_parameters"]
    return registry.plugin_manager.hook.load_backbone_from_name(
        name=name_or_path, load_options=options, config_overrides=MappingProxyType(dict(overrides)), options=legacy
    )


def save_checkpoint(model: Backbone, directory: Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (transformers' format) atomically into ``directory``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in model.state_dict().items():
        if tensor.device.type == "meta":
            raise CheckpointError(f"cannot save {key}: it was never materialised (still on the meta device)")
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()  # safetensors refuses tensors that share memory
        seen.add(tensor.untyped_storage().data_ptr())
        state[key] = tensor
    config = model.config.to_dict()
    config["architectures"] = [model.reference_class_name]
    atomic_write(directory / SAFETENSORS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
