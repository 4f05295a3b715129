"""Time and peak memory of ``neighborhood_attention_2d`` against brute-force references, on CPU.

    .venv/bin/python plugins/nat/benchmarks/bench_attention.py            # the table in the README
    .venv/bin/python plugins/nat/benchmarks/bench_attention.py --threads 1 --repeat 5

Three ways to compute the same thing (the references live in ``tests/natten_reference.py``):

* ``tiled``: this package's op.
* ``gather``: natten 0.14's two kernels written with a gather, which copies every key and value
  ``kernel_size ** 2`` times (what a straightforward port does).
* ``dense``: full ``(H*W) x (H*W)`` attention with an additive mask built from the same rules (its
  mask construction is left out of the timing); skipped above ``--dense-limit`` tokens.

Peak memory is the high-water mark of tensor memory allocated during one call, read from the torch
profiler's allocation events (inputs excluded). Times are measured after a
warm-up call (which builds and caches the op's index tables); the best of ``--repeat`` calls is
reported, as the least disturbed by other work on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from natten_reference import dense_mask, dense_neighborhood_attention, natten2dav, natten2dqkrpb

from backbones_nat.attention import neighborhood_attention_2d

# (height, width, heads, head_dim, kernel_size, dilation): dinat-mini's stages at 224 x 224 and a
# 512 x 512 detection input's first stage.
CASES = [
    (56, 56, 2, 32, 7, 1),
    (56, 56, 2, 32, 7, 8),
    (28, 28, 4, 32, 7, 4),
    (14, 14, 8, 32, 7, 2),
    (7, 7, 16, 32, 7, 1),
    (128, 128, 2, 32, 7, 1),
    (128, 128, 2, 32, 7, 16),
]


def peak_bytes(call: Callable[[], object]) -> int:
    """High-water mark of memory allocated by ``call`` (allocations minus frees, in event order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda event: event.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def best_seconds(call: Callable[[], object], repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def methods(height: int, width: int, heads: int, dim: int, kernel: int, dilation: int, batch: int, dense_limit: int):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, height, width, heads, dim, generator=generator) for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=generator)
    scale = dim**-0.5

    def tiled() -> object:
        return neighborhood_attention_2d(q, k, v, rpb, kernel, dilation)

    q_first, k_first, v_first = (x.permute(0, 3, 1, 2, 4).contiguous() for x in (q, k, v))

    def gather() -> object:
        scores = natten2dqkrpb(q_first * scale, k_first, rpb, kernel, dilation).softmax(-1)
        return natten2dav(scores, v_first, kernel, dilation)

    found = {"tiled": tiled, "gather": gather}
    if height * width <= dense_limit:
        mask = dense_mask(height, width, rpb, kernel, dilation, heads, q.dtype)
        found["dense"] = lambda: dense_neighborhood_attention(q, k, v, rpb, kernel, dilation, mask=mask)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dense-limit", type=int, default=4096, help="largest H*W the dense reference runs on")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, fp32, forward only")
    print("| map | heads x dim | kernel, dilation | method | time (ms) | peak memory (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    with torch.no_grad():
        for height, width, heads, dim, kernel, dilation in CASES:
            found = methods(height, width, heads, dim, kernel, dilation, args.batch, args.dense_limit)
            for name, call in found.items():
                seconds = best_seconds(call, args.repeat)
                peak = peak_bytes(call)
                print(
                    f"| {height}x{width} | {heads}x{dim} | {kernel}, {dilation} | {name} "
                    f"| {seconds * 1e3:.2f} | {peak / 2**20:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
