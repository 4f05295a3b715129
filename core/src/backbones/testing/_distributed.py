"""The conformance kit's distributed check: :func:`launch` starts two ranks of a worker module with torchrun's
environment variables (``python -m backbones.testing._distributed SPEC``; ``torchrun --nproc_per_node=2``
runs the same worker).

Every rank builds the same randomly initialised backbone, trains it for a few SGD steps on its own
inputs with a loss over every feature map, first under DDP (without ``find_unused_parameters``) and
then, from the same start, under FSDP2 (``fully_shard`` on every CheckpointableLayer, then the root).
Each rank writes what it ended with to ``SPEC``'s output directory; the kit compares the ranks.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from .._backbone import Backbone

# Failures worth one more try: a rank killed by a signal (gloo's threads can abort a rank at shutdown on a
# loaded machine) or a rendezvous port taken between choosing it and binding it. A Python error in the
# worker is neither, and fails at once.
_RETRYABLE = re.compile(r"address already in use|EADDRINUSE", re.IGNORECASE)
_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_ranks(command: list[str], env: dict[str, str], out_dir: Path) -> tuple[list[int], int, bool, str]:
    """Start both ranks (torchrun's environment variables, without its agent process); when one fails or
    the time runs out, stop the other.

    Returns each rank's exit status, the status of the first rank seen failing (0 if none), whether the time
    ran out, and the ranks' output (stdout and stderr, rank by rank)."""
    env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    logs = [out_dir / f"rank-{rank}.log" for rank in (0, 1)]
    processes = []
    for rank, log in enumerate(logs):
        with log.open("w") as stream:
            rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
            processes.append(subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=rank_env))
    deadline = time.monotonic() + _TIMEOUT_S
    first_failure = 0
    timed_out = False
    while [process.poll() for process in processes].count(None):  # poll every rank (any() would stop early)
        if not first_failure:
            first_failure = next((p.returncode for p in processes if p.returncode not in (None, 0)), 0)
        timed_out = timed_out or (not first_failure and time.monotonic() > deadline)
        if first_failure or timed_out:
            for process in processes:
                if process.poll() is None:
                    process.kill()
        time.sleep(0.05)
    statuses = [int(process.returncode) for process in processes]
    if not first_failure:
        first_failure = next((status for status in statuses if status != 0), 0)
    output = "\n".join(
        f"--- rank {rank} (exit {status}) ---\n{log.read_text()[-4000:]}"
        for rank, (status, log) in enumerate(zip(statuses, logs))
    )
    if timed_out:
        output = f"the ranks were stopped after {_TIMEOUT_S} s\n{output}"
    return statuses, first_failure, timed_out, output


def launch(model: Backbone, worker: str, out_dir: Path, *, batch_size: int, channels: int, size: list[int]) -> None:
    """Run ``python -m worker SPEC`` as two CPU ranks (gloo), for ``model``'s class and config.

    A run in which a rank was killed by a signal, or the rendezvous port was taken, is tried once more from
    scratch; any other failure, or a second one, fails the calling check with the ranks' output.
    """
    config = model.config
    spec = {
        "config": config.to_dict(),
        "config_class": f"{type(config).__module__}:{type(config).__qualname__}",
        "model_class": f"{type(model).__module__}:{type(model).__qualname__}",
        "sys_path": [entry for entry in sys.path if entry],
        "batch_size": batch_size,
        "channels": channels,
        "size": size,
        "steps": 2,
        "lr": 0.05,
        "out_dir": str(out_dir),
    }
    (out_dir / "spec.json").write_text(json.dumps(spec))
    command = [sys.executable, "-m", worker, str(out_dir / "spec.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for attempt in (1, 2):
        statuses, first_failure, timed_out, output = _run_ranks(command, env, out_dir)
        # A rank killed for running out of time is not a signal from gloo: a hang is not tried again.
        retry = not timed_out and (first_failure < 0 or _RETRYABLE.search(output) is not None)
        if first_failure == 0 or attempt == 2 or not retry:
            break
    assert statuses == [0, 0], f"ranks exited with {statuses}\n{output}"


def finish() -> None:
    """End a rank: wait for the other, close the group, and leave without the interpreter's teardown (gloo's
    background threads can abort a rank while C++ statics are destroyed; every output is written by now)."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _load(target: str) -> Any:
    module_name, _, qualname = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def _build(spec: dict[str, Any]) -> nn.Module:
    from . import randomize_weights_

    config = _load(spec["config_class"]).from_dict(spec["config"])
    torch.manual_seed(0)
    model = _load(spec["model_class"])(config)
    randomize_weights_(model, 0)
    return model.train()


def _batch(spec: dict[str, Any], rank: int, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(spec["batch_size"], spec["channels"], *spec["size"], generator=generator)


def _train(model: nn.Module, wrapped: nn.Module, spec: dict[str, Any], rank: int) -> list[str]:
    """Run the steps; return the trainable parameters that got no gradient in the first step.

    The backbone's declared extra forward inputs get their example values."""
    from .. import Backbone
    from . import example_forward_inputs, feature_map_loss

    # A peft-adapted backbone (the LoRA check) declares its inputs through its base model.
    get_base_model = getattr(model, "get_base_model", None)
    base = get_base_model() if callable(get_base_model) else model
    extras = example_forward_inputs(base, spec["batch_size"]) if isinstance(base, Backbone) else {}
    optimizer = torch.optim.SGD(model.parameters(), lr=spec["lr"])
    missing: list[str] = []
    for step in range(spec["steps"]):
        optimizer.zero_grad(set_to_none=True)
        feature_map_loss(wrapped(_batch(spec, rank, step), **extras).feature_maps).backward()
        if step == 0:
            missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
        optimizer.step()
    return missing


def join_group(spec_path: str) -> tuple[dict[str, Any], int, Path]:
    """Start a worker rank: read ``SPEC``, import from its ``sys_path`` and join the gloo process group.

    Returns:
        The spec, this rank and the output directory.
    """
    spec = json.loads(Path(spec_path).read_text())
    sys.path[:0] = [entry for entry in spec["sys_path"] if entry not in sys.path]
    dist.init_process_group("gloo")
    return spec, dist.get_rank(), Path(spec["out_dir"])


def save_parameters(model: nn.Module, path: Path) -> None:
    """Write ``model``'s parameters (as they are on this rank) to a safetensors file."""
    from safetensors.torch import save_file

    save_file({name: p.detach().contiguous() for name, p in model.named_parameters()}, path)


def main(spec_path: str) -> None:
    spec, rank, out = join_group(spec_path)
    from safetensors.torch import save_file

    from ..layers import CheckpointableLayer

    # DDP: a parameter without a gradient makes the second step fail, as it would for users.
    model = _build(spec)
    ddp = nn.parallel.DistributedDataParallel(model)
    ddp_missing = _train(model, ddp, spec, rank)
    save_parameters(model, out / f"ddp-{rank}.safetensors")

    # FSDP2 from the same start.
    from torch.distributed.fsdp import fully_shard

    model = _build(spec)
    layers = [module for module in model.modules() if isinstance(module, CheckpointableLayer)]
    for layer in reversed(layers):
        fully_shard(layer)
    fully_shard(model)
    fsdp_missing = _train(model, model, spec, rank)
    full = {name: p.full_tensor().detach().contiguous() for name, p in model.named_parameters()}  # type: ignore[attr-defined]
    save_file(full, out / f"fsdp-{rank}.safetensors")
    (out / f"report-{rank}.json").write_text(
        json.dumps({"ddp_missing": ddp_missing, "fsdp_missing": fsdp_missing, "fsdp_sharded_layers": len(layers)})
    )
    finish()


if __name__ == "__main__":
    main(sys.argv[1])
