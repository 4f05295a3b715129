"""Benchmark backbones against transformers and timm in one run; write docs/benchmarks.md and results.json.

    .venv/bin/python benchmarks/run.py                 # the full suite (~15 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick         # a ~2-minute smoke run
    .venv/bin/python benchmarks/run.py --only swin,resnet --skip process

See benchmarks/README.md for what is measured and how to read the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.report import IMPLS, render_markdown  # noqa: E402
from benchmarks.specs import ARCHS, BIG_LOAD, BIG_LOAD_SHARD_BYTES, Arch, arch_by_name  # noqa: E402

__all__ = ["interleaved", "main", "measure_forward", "time_call"]

SECTIONS = ("imports", "process", "load", "forward", "truncated", "reparam", "bigload")
WHOLE_PROCESS_ARCHS = ("swin", "resnet", "convnext")
TRUNCATED_ARCHS = ("swin", "resnet")
REPARAM_TIMM_MODEL = "mobileone_s0"
"""The timm model of the ``reparam`` section's backbones-timm row (``--only timm``): MobileOne's
multi-branch blocks, which timm's ``reparameterize_model`` folds."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- timing primitives ------------------------------------------------------------------------------


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def set_clock(name: str) -> None:
    """``wall`` (elapsed time) or ``cpu`` (CPU time of this process, and of each child process).

    With one torch thread, CPU time is what the latency would be on an idle machine, and it does not
    count the time the process waits for a core: on an oversubscribed machine it is the fair clock.
    """
    global _clock
    _clock = CLOCKS[name]


def clock_name() -> str:
    return next(name for name, function in CLOCKS.items() if function is _clock)


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
PINNED_MMAP_THRESHOLD = 32 * 2**20
PINNED_TRIM_THRESHOLD = 2**30


def pin_allocator() -> str:
    """Fix glibc malloc's thresholds for the whole run, so that one implementation's frees cannot tune it.

    By default glibc raises its mmap threshold (up to 32 MiB) each time a large mmapped block is freed,
    and returns freed heap to the kernel above a trim threshold. Timing three implementations in turn in
    one process, each then runs under whatever the previous one left: the same model measured after
    another pays a few hundred page faults per forward more, or fewer (measured on one ViT-S/14: 555, 0
    and 588 faults per forward for ours, timm and transformers interleaved; timm alone in a process of its
    own: 1143). Pinning the mmap threshold at its ceiling and the trim threshold at 1 GiB
    gives every implementation the same allocator, whatever ran before it. Returns a line for the report:
    ``"platform default (...)"`` where the C library is not glibc or refuses the settings.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return "platform default (not glibc)"
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return "platform default (no mallopt)"
    pinned = libc.mallopt(_M_MMAP_THRESHOLD, PINNED_MMAP_THRESHOLD) and libc.mallopt(
        _M_TRIM_THRESHOLD, PINNED_TRIM_THRESHOLD
    )
    if not pinned:
        return "platform default (mallopt refused)"
    return f"glibc, pinned: M_MMAP_THRESHOLD={PINNED_MMAP_THRESHOLD >> 20} MiB, M_TRIM_THRESHOLD=1 GiB"


def time_call(function: Callable[[], Any]) -> float:
    """Seconds one call of ``function`` takes (by the clock :func:`set_clock` chose)."""
    start = _clock()
    function()
    return _clock() - start


def interleaved(
    functions: Mapping[str, Callable[[], Any]],
    repetitions: int,
    warmup: int = 0,
    budget_s: float | None = None,
    max_repetitions: int | None = None,
) -> dict[str, list[float]]:
    """Time each function ``repetitions`` times, interleaved: A, B, C, B, C, A, C, A, B, ...

    The order rotates every repetition so that neither load bursts nor cache effects favour one
    implementation. With ``budget_s``, the repetitions grow (up to ``max_repetitions``) to fill about
    that many seconds, estimated from the last warm-up call.
    """
    names = list(functions)
    last: dict[str, float] = {}
    for _ in range(warmup):
        for name in names:
            last[name] = time_call(functions[name])
    if budget_s is not None and last:
        per_round = sum(last.values())
        wanted = int(budget_s / max(per_round, 1e-9))
        repetitions = max(repetitions, min(wanted, max_repetitions or wanted))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repetitions):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_call(functions[name]))
    return samples


# -- machine and versions ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_and_versions(threads: int) -> dict[str, Any]:
    import importlib.metadata as metadata

    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name, distribution in (("transformers", "transformers"), ("timm", "timm"), ("backbones", "backbones-core")):
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "threads": threads,
            "platform": f"{platform.system()} {platform.release()}",
        },
        "versions": versions,
    }


# -- whole-process measurements -----------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"  # nothing in these processes may reach a hub
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["PYTHONWARNINGS"] = "ignore"
    return env


class _ChildClock:
    """Times fresh processes: wall seconds, or with the ``cpu`` clock their user + system CPU seconds."""

    def __init__(self) -> None:
        self.elapsed = 0.0

    def __call__(self, command: Sequence[str]) -> str:
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=_env(), cwd=tempfile.gettempdir())
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.elapsed = cpu if clock_name() == "cpu" else wall
        return done.stdout


def _run_process(command: Sequence[str]) -> tuple[float, str]:
    """Seconds of one fresh process (wall, or its CPU time with the ``cpu`` clock) and its stdout."""
    child = _ChildClock()
    stdout = child(command)
    return child.elapsed, stdout


def _interleaved_processes(
    commands: Mapping[str, Callable[[], tuple[float, str]]], repetitions: int, warmup: int
) -> dict[str, list[float]]:
    """Like :func:`interleaved`, for functions that run a process and return ``(seconds, stdout)``."""
    names = list(commands)
    for _ in range(warmup):
        for name in names:
            commands[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repetitions):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(commands[name]()[0])
    return samples


def _backbones_command() -> list[str]:
    script = Path(sys.executable).parent / "backbones"
    if script.exists():
        return [str(script), "list"]
    return [sys.executable, "-c", "import sys; from backbones._cli import main; sys.exit(main(['list']))"]


def measure_imports(repetitions: int) -> dict[str, Any]:
    """Whole-process wall of start-up commands (median of fresh processes), and whether torch got imported."""
    python = sys.executable
    commands = {
        "python -c pass": [python, "-c", "pass"],
        "import backbones": [python, "-c", "import backbones"],
        "backbones list": _backbones_command(),
        "from transformers import AutoBackbone": [python, "-c", "from transformers import AutoBackbone"],
        "import timm": [python, "-c", "import timm"],
    }
    samples = _interleaved_processes(
        {name: lambda c=command: _run_process(c) for name, command in commands.items()}, repetitions, warmup=1
    )
    probes = {
        "import backbones": "import sys\nimport backbones\nprint('torch' in sys.modules)",
        "backbones list": (
            "import contextlib, io, sys\nfrom backbones._cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['list'])\nprint('torch' in sys.modules)"
        ),
    }
    torch_imported = {
        name: _run_process([python, "-c", code])[1].strip().splitlines()[-1] == "True" for name, code in probes.items()
    }
    return {"samples": samples, "torch_imported": torch_imported}


# Peak RSS is read from /proc/self/status (VmHWM: this process image's high-water mark). Not ru_maxrss:
# Linux carries the forking parent's peak into it across exec, and the parent here holds large models.
PEAK_RSS = """
def _peak_rss_kib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes there, but no forked parent issue
"""

WHOLE_OURS = (
    PEAK_RSS
    + """
import torch
torch.set_num_threads({threads})
from backbones import AutoBackbone
model = AutoBackbone.from_pretrained({directory!r})
with torch.inference_mode():
    model(torch.randn(1, 3, 224, 224))
print(_peak_rss_kib())
"""
)

# transformers.AutoBackbone.from_pretrained(local_dir) fails in 5.23 (it validates the path as a hub
# repo id, even with HF_HUB_OFFLINE=1), so the concrete class is used, as users must.
WHOLE_TRANSFORMERS = (
    PEAK_RSS
    + """
import torch
torch.set_num_threads({threads})
from transformers import {backbone_class}
model = {backbone_class}.from_pretrained({directory!r}).eval()
with torch.inference_mode():
    model(torch.randn(1, 3, 224, 224))
print(_peak_rss_kib())
"""
)


def measure_whole_process(arch: Arch, directory: Path, repetitions: int, threads: int) -> dict[str, Any]:
    """Wall and peak RSS of a fresh process that imports, loads ``directory`` and runs one forward."""
    scripts = {
        "ours": WHOLE_OURS.format(threads=threads, directory=str(directory)),
        "transformers": WHOLE_TRANSFORMERS.format(
            threads=threads, directory=str(directory), backbone_class=arch.hf_backbone
        ),
    }
    rss: dict[str, list[float]] = {name: [] for name in scripts}

    def run(name: str) -> tuple[float, str]:
        seconds, stdout = _run_process([sys.executable, "-c", scripts[name]])
        rss[name].append(int(stdout.strip().splitlines()[-1]) / 1024)  # KiB -> MiB
        return seconds, stdout

    samples = _interleaved_processes({name: lambda n=name: run(n) for name in scripts}, repetitions, warmup=1)
    return {name: {"time_s": samples[name], "rss_mib": rss[name][1:]} for name in scripts}  # drop the warm-up


# -- a big sharded checkpoint ---------------------------------------------------------------------------


def write_big_checkpoint(directory: Path, arch: Arch = BIG_LOAD, shard_bytes: int = BIG_LOAD_SHARD_BYTES) -> int:
    """Write ``arch`` as transformers lays out a big checkpoint: ``config.json``, bfloat16 shards of at most
    ``shard_bytes`` and ``model.safetensors.index.json``. The tensor names and shapes are transformers'
    (its model built on the meta device); the values are random. Returns the bytes of tensor data."""
    import torch
    import transformers
    from safetensors.torch import save_file

    config = getattr(transformers, arch.hf_config or "")(**arch.config)
    with torch.device("meta"):
        shapes = {
            key: value.shape
            for key, value in getattr(transformers, arch.hf_backbone or "")(config).state_dict().items()
        }
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    generator = torch.Generator().manual_seed(0)
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for key, shape in shapes.items():
        tensor = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        if size + tensor.nbytes > shard_bytes and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += tensor.nbytes
    weight_map: dict[str, str] = {}
    for number, shard in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(tensor.nbytes for shard in shards for tensor in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


# RSS counts the pages of a memory-mapped file once they are read; the script reads a byte of every
# page of every parameter after loading, so a lazily mapped load and a copied one are measured alike.
BIG_LOAD_SCRIPT = """
import json, sys, time

def status(field):
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field):
                return int(line.split()[1]) / 1024

import torch
torch.set_num_threads({threads})
floor = status("VmRSS:")
start = time.perf_counter()
{load}
loaded = time.perf_counter()
with torch.no_grad():
    for parameter in model.parameters():
        step = max(1, 4096 // parameter.element_size())
        parameter.detach().reshape(-1)[::step].float().sum()
touched = time.perf_counter()
dtypes = sorted({{str(p.dtype) for p in model.parameters()}})
print(json.dumps({{"floor_mib": floor, "load_s": loaded - start, "load_and_read_s": touched - start,
                  "peak_above_floor_mib": status("VmHWM:") - floor, "dtypes": dtypes,
                  "parameters": sum(p.numel() for p in model.parameters())}}))
"""
BIG_LOAD_OURS = (
    "from backbones import AutoBackbone\nmodel = AutoBackbone.from_pretrained({directory!r}, dtype=torch.bfloat16)"
)
BIG_LOAD_TRANSFORMERS = (
    "import transformers\n"
    "model = transformers.{backbone_class}.from_pretrained({directory!r}, dtype=torch.bfloat16).eval()"
)


def measure_big_load(directory: Path, checkpoint_bytes: int, repetitions: int, threads: int) -> dict[str, Any]:
    """Fresh processes that import torch, then load ``directory`` in bfloat16 (ours and transformers).

    Per process: the wall time seen by the parent, and inside it (from after ``import torch``: the
    floor) the time to import and load, to load and read every parameter's pages once, and the peak RSS
    above the floor.
    """
    loads = {
        "ours": BIG_LOAD_OURS.format(directory=str(directory)),
        "transformers": BIG_LOAD_TRANSFORMERS.format(directory=str(directory), backbone_class=BIG_LOAD.hf_backbone),
    }
    scripts = {name: BIG_LOAD_SCRIPT.format(threads=threads, load=load) for name, load in loads.items()}
    inside: dict[str, list[dict[str, Any]]] = {name: [] for name in scripts}

    def run(name: str) -> tuple[float, str]:
        seconds, stdout = _run_process([sys.executable, "-c", scripts[name]])
        inside[name].append(json.loads(stdout.strip().splitlines()[-1]))
        return seconds, stdout

    samples = _interleaved_processes({name: lambda n=name: run(n) for name in scripts}, repetitions, warmup=1)
    result: dict[str, Any] = {"label": BIG_LOAD.label, "checkpoint_bytes": checkpoint_bytes}
    for name in scripts:
        measured = inside[name][1:]  # drop the warm-up (it also fills the page cache)
        result[name] = {
            "time_s": samples[name],
            **{key: [row[key] for row in measured] for key in ("load_s", "load_and_read_s", "peak_above_floor_mib")},
            "dtypes": measured[-1]["dtypes"],
            "parameters": measured[-1]["parameters"],
        }
    return result


# -- in-process measurements --------------------------------------------------------------------------


def measure_load(arch: Arch, directory: Path, repetitions: int) -> dict[str, list[float]]:
    from backbones import AutoBackbone

    functions: dict[str, Callable[[], Any]] = {"ours": lambda: AutoBackbone.from_pretrained(directory)}
    if arch.hf_backbone is not None:
        functions["transformers"] = lambda: arch.load_transformers(directory)
    if arch.timm_name is not None:
        functions["timm_create"] = arch.build_timm
    return interleaved(functions, repetitions, warmup=1)


def _forward_function(impl: str, model: Any, arch: Arch, pixels: Any) -> Callable[[], Any]:
    if impl == "timm" and not arch.timm_features_only:
        return lambda: model.forward_features(pixels)
    return lambda: model(pixels)


def measure_forward(
    models: Mapping[str, Any],
    arch: Arch,
    batch: int,
    mode: str,
    repetitions: int,
    warmup: int,
    budget_s: float | None = None,
    max_repetitions: int | None = None,
    size: int = 224,
) -> dict[str, list[float] | None]:
    """Forward latency samples of each model (``None`` for a missing model), interleaved.

    ``mode`` is ``fp32``, ``channels_last`` (model and input converted, then the model converted back)
    or ``bf16`` (CPU autocast).
    """
    import contextlib

    import torch

    present = {impl: model for impl, model in models.items() if model is not None}
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    if mode == "channels_last":
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        for model in present.values():
            model.to(memory_format=torch.channels_last)
    functions = {impl: _forward_function(impl, model, arch, pixels) for impl, model in present.items()}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    try:
        with torch.inference_mode(), autocast:
            samples = interleaved(functions, repetitions, warmup, budget_s, max_repetitions)
    finally:
        if mode == "channels_last":
            for model in present.values():
                model.to(memory_format=torch.contiguous_format)
    return {impl: samples.get(impl) for impl in models}


# -- the run ----------------------------------------------------------------------------------------------


def merge_section(previous: Any, fresh: Any) -> Any:
    """``fresh`` measurements merged into a section of an earlier run: rows measured again replace theirs.

    Dict sections merge by key; list sections (one row per architecture, mode and batch) replace the
    rows with the same ``(arch, mode, batch)`` in place and append new ones.
    """
    if isinstance(previous, dict) and isinstance(fresh, dict):
        return {**previous, **fresh}
    if isinstance(previous, list) and isinstance(fresh, list):

        def identity(row: dict[str, Any]) -> tuple[Any, ...]:
            return row.get("arch"), row.get("mode"), row.get("batch")

        replacements = {identity(row): row for row in fresh}
        merged = [replacements.pop(identity(row), row) for row in previous]
        return merged + [row for row in fresh if identity(row) in replacements]
    return fresh


# Each setting's value in a --quick run and in a full run.
_SETTINGS: dict[str, tuple[Any, Any]] = {
    "import_reps": (3, 5),
    "process_reps": (2, 3),
    "load_reps": (1, 2),
    "bigload_reps": (1, 2),
    # Ratios near 1.00x (the same network, the same kernels) need the full run's repetitions: single medians
    # move by several percent on a shared machine.
    "bs1": (
        {"repetitions": 3, "warmup": 1, "budget_s": 0.6, "max_repetitions": 5},
        {"repetitions": 7, "warmup": 1, "budget_s": 3.0, "max_repetitions": 21},
    ),
    "bs8": (
        {"repetitions": 2, "warmup": 1, "budget_s": None, "max_repetitions": None},
        {"repetitions": 5, "warmup": 1, "budget_s": 6.0, "max_repetitions": 9},
    ),
    "modes_bs8": (("fp32",), ("fp32",)),
}


def _settings(quick: bool, forward_scale: float = 1.0) -> dict[str, Any]:
    """The run's settings; ``forward_scale`` multiplies the forward rows' repetitions and time budgets (a
    re-measurement of a few rows near their threshold can afford many more samples than the full suite)."""
    settings = {name: quick_value if quick else full_value for name, (quick_value, full_value) in _SETTINGS.items()}
    for batch in ("bs1", "bs8"):
        settings[batch] = {
            key: value if value is None or key == "warmup" else type(value)(value * forward_scale)
            for key, value in settings[batch].items()
        }
    return settings


QUICK_ARCHS = ("swin", "resnet", "convnext")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    threads = args.threads or os.cpu_count() or 1
    set_clock(args.clock)
    allocator = pin_allocator() if args.allocator == "pinned" else "glibc default"
    torch.set_num_threads(threads)
    if args.forward_scale <= 0:
        raise SystemExit(f"--forward-scale must be above 0, got {args.forward_scale}")
    settings = _settings(args.quick, args.forward_scale)
    only = [name.strip() for name in (args.only or "").split(",") if name.strip()]
    if only:
        archs = [arch_by_name(name) for name in only if name not in ("bigload", "timm")]
    elif args.quick:
        archs = [arch_by_name(name) for name in QUICK_ARCHS]
    else:
        archs = list(ARCHS)
    skip = set(args.skip.split(",")) if args.skip else set()
    unknown = skip - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--skip: unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")

    results: dict[str, Any] = {
        "meta": {
            **machine_and_versions(threads),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
            "quick": args.quick,
            "clock": args.clock,
            "allocator": allocator,
            "load_average_start": [round(value, 1) for value in os.getloadavg()],
            "settings": {key: value for key, value in settings.items() if key != "modes_bs8"},
        },
        "notes": {arch.name: arch.note for arch in archs if arch.note},
    }
    workdir = Path(tempfile.mkdtemp(prefix="backbones-bench-"))
    try:
        if "imports" not in skip:
            log("start-up processes")
            results["imports"] = measure_imports(settings["import_reps"])
        results["load"] = {}
        results["forward"] = []
        results["truncated"] = []
        results["reparam"] = []
        results["whole_process"] = {}
        for arch in archs if {"process", "load", "forward", "truncated", "reparam"} - skip else []:
            directory = workdir / arch.name
            log(f"{arch.name}: writing checkpoint")
            arch.write_checkpoint(directory)
            if "process" not in skip and arch.name in WHOLE_PROCESS_ARCHS and arch.hf_backbone:
                log(f"{arch.name}: whole process")
                results["whole_process"][arch.name] = measure_whole_process(
                    arch, directory, settings["process_reps"], threads
                )
            if "load" not in skip:
                log(f"{arch.name}: from_pretrained")
                results["load"][arch.name] = measure_load(arch, directory, settings["load_reps"])
            gc.collect()
            if "reparam" not in skip:
                _reparam_row(arch, directory, settings, results)
            if "forward" in skip and "truncated" in skip:
                shutil.rmtree(directory)
                continue
            _forward_rows(arch, directory, settings, results, skip)
            shutil.rmtree(directory)
            gc.collect()
        if "reparam" not in skip and (("timm" in only) if only else not args.quick):
            _reparam_timm_row(settings, results)
        if "bigload" not in skip and (("bigload" in only) if only else not args.quick):
            directory = workdir / "bigload"
            log(f"{BIG_LOAD.name}: writing a sharded bfloat16 checkpoint")
            written = write_big_checkpoint(directory)
            log(f"{BIG_LOAD.name}: fresh processes loading {written / 2**30:.2f} GiB")
            results["bigload"] = measure_big_load(directory, written, settings["bigload_reps"], threads)
            shutil.rmtree(directory)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _forward_rows(
    arch: Arch, directory: Path, settings: Mapping[str, Any], results: dict[str, Any], skip: set[str]
) -> None:
    from backbones import AutoBackbone

    models = {
        "ours": AutoBackbone.from_pretrained(directory),
        "transformers": arch.load_transformers(directory),
        "timm": arch.build_timm(),
    }
    assert list(models) == list(IMPLS)
    if "forward" not in skip:
        plan = [(1, "fp32"), (8, "fp32")]
        plan += [(1, "channels_last")] if arch.channels_last else []
        plan += [(1, "bf16")]
        plan += [(8, mode) for mode in settings["modes_bs8"] if mode != "fp32"]
        for batch, mode in plan:
            log(f"{arch.name}: forward {mode} batch {batch}")
            samples = measure_forward(models, arch, batch, mode, **settings[f"bs{batch}"])
            results["forward"].append(
                {"arch": arch.name, "label": arch.label, "mode": mode, "batch": batch, "samples": samples}
            )
    if "truncated" not in skip and arch.name in TRUNCATED_ARCHS:
        truncated = AutoBackbone.from_pretrained(directory, out_indices=[1])
        for batch in (1, 8):
            log(f"{arch.name}: out_indices=[1] batch {batch}")
            samples = measure_forward(
                {"full": models["ours"], "truncated": truncated}, arch, batch, "fp32", **settings[f"bs{batch}"]
            )
            results["truncated"].append({"arch": arch.name, "batch": batch, **samples})


def _measure_folding(name: str, label: str, model: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """bs1 fp32 latency of ``model`` (in evaluation mode), then of a copy folded by ``reparameterize()``."""
    import copy

    import torch

    folded = copy.deepcopy(model)
    blocks = folded.reparameterize()
    log(f"{name}: reparameterize() folded {blocks} blocks; forward fp32 batch 1 before/after")
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        samples = interleaved({"unfolded": lambda: model(pixels), "folded": lambda: folded(pixels)}, **settings["bs1"])
    return {"arch": name, "label": label, "batch": 1, "mode": "fp32", "folded_blocks": blocks, **samples}


def _reparam_row(arch: Arch, directory: Path, settings: Mapping[str, Any], results: dict[str, Any]) -> None:
    """The ``reparam`` row of ``arch``, if its backbone folds anything (see ``Backbone.reparameterize``)."""
    from backbones import AutoBackbone

    model = AutoBackbone.from_pretrained(directory).eval()
    if model.supports_reparameterize:
        results["reparam"].append(_measure_folding(arch.name, arch.label, model, settings))


def _reparam_timm_row(settings: Mapping[str, Any], results: dict[str, Any]) -> None:
    """The ``reparam`` row of backbones-timm: :data:`REPARAM_TIMM_MODEL` folded by timm's own helper."""
    import torch

    from backbones_timm import TimmBackbone, TimmBackboneConfig

    torch.manual_seed(0)
    model = TimmBackbone(TimmBackboneConfig(backbone=REPARAM_TIMM_MODEL, out_indices=[1, 2, 3, 4])).eval()
    results["reparam"].append(_measure_folding("timm", f"timm {REPARAM_TIMM_MODEL}", model, settings))


def plot_forward(results: Mapping[str, Any], path: Path) -> bool:
    """A grouped bar chart of fp32 forward medians (batch 1 and 8); ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from benchmarks.report import forward_rows

    rows = [row for row in forward_rows(results.get("forward", [])) if row["mode"] == "fp32"]
    batches = sorted({row["batch"] for row in rows})
    if not rows:
        return False
    figure, axes = plt.subplots(1, len(batches), figsize=(7 * len(batches), 5), squeeze=False)
    colours = {"ours": "#1f77b4", "transformers": "#ff7f0e", "timm": "#2ca02c"}
    for axis, batch in zip(axes[0], batches):
        subset = [row for row in rows if row["batch"] == batch]
        names = [row["arch"] for row in subset]
        width = 0.27
        for offset, impl in enumerate(IMPLS):
            values = [(row[impl] or 0) * 1000 for row in subset]
            positions = [index + (offset - 1) * width for index in range(len(names))]
            axis.barh(positions, values, height=width, label=impl, color=colours[impl])
        axis.set_yticks(range(len(names)), names)
        axis.invert_yaxis()
        axis.set_xlabel("median forward latency, ms (fp32, 224x224)")
        axis.set_title(f"batch {batch}")
        axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a ~2-minute smoke run: few repetitions, swin/resnet/convnext"
    )
    parser.add_argument("--only", help="comma-separated architectures, e.g. swin,resnet")
    parser.add_argument("--skip", help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of the process (fair on a busy machine; use with --threads 1)",
    )
    parser.add_argument(
        "--allocator",
        choices=("pinned", "default"),
        default="pinned",
        help="pinned (default): fix glibc malloc's mmap/trim thresholds, so that the implementations timed in turn "
        "in this process do not tune the allocator for each other; default: leave glibc's adaptive thresholds",
    )
    parser.add_argument(
        "--forward-scale",
        type=float,
        default=1.0,
        help="multiply the forward rows' repetitions and time budgets, e.g. 3 to re-measure rows near 1.00x",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="markdown report")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json", help="raw results")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "benchmarks-forward.png")
    parser.add_argument(
        "--update",
        action="store_true",
        help="merge the sections measured now into the existing --json instead of replacing it (use with --skip)",
    )
    parser.add_argument("--from-json", type=Path, help="only re-render the report from a results.json")
    args = parser.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass

    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        started = time.perf_counter()
        results = run(args)
        results["meta"]["elapsed_s"] = round(time.perf_counter() - started, 1)
        results["meta"]["load_average_end"] = [round(value, 1) for value in os.getloadavg()]
        if args.update and args.json.exists():
            previous = json.loads(args.json.read_text())
            fresh = {key: value for key, value in results.items() if key not in ("meta", "notes") and value}
            for key, value in fresh.items():
                previous[key] = merge_section(previous.get(key), value)
            previous["notes"] = {**previous.get("notes", {}), **results["notes"]}
            previous["meta"].setdefault("updates", []).append(
                {
                    "command": results["meta"]["command"],
                    "date": results["meta"]["date"],
                    "sections": sorted(fresh),
                    "allocator": results["meta"]["allocator"],
                }
            )
            results = previous
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.json} ({results['meta']['elapsed_s']} s)")
    plot = None
    if plot_forward(results, args.plot):
        plot = os.path.relpath(args.plot, args.out.parent)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_markdown(results, plot=plot))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
