"""Pure functions: medians, ratios, pass/miss verdicts and the markdown report built from ``results.json``.

Nothing here measures or imports torch, so the table code can be tested on made-up timings.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "IMPLS",
    "TARGETS",
    "forward_rows",
    "median",
    "ratio",
    "render_markdown",
    "target_rows",
    "verdict",
]

IMPLS = ("ours", "transformers", "timm")

# Thresholds of issue #8.
TARGETS = {
    "import_over_bare_s": 0.030,
    "list_s": 0.3,
    "whole_wall_ratio": 0.55,
    "whole_rss_ratio": 0.70,
    "forward_ratio": 1.0,
    "truncated_ratio": 0.35,
}

FORWARD_COLUMNS = ["architecture", "size", "mode", "batch", "ours ms", "transformers ms", "timm ms", "ratio", "status"]


def median(samples: Sequence[float] | None) -> float | None:
    """The median of ``samples``, or ``None`` when there are none."""
    if not samples:
        return None
    return float(statistics.median(samples))


def ratio(ours: float | None, references: Sequence[float | None]) -> float | None:
    """``ours / min(references)`` over the references that were measured, or ``None``."""
    measured = [value for value in references if value is not None]
    if ours is None or not measured:
        return None
    return ours / min(measured)


def _medians_and_ratio(
    entry: Mapping[str, Any], base: str, other: str
) -> tuple[float | None, float | None, float | None]:
    """The medians of ``entry[base]`` and ``entry[other]`` (samples), and ``other / base`` (see :func:`ratio`)."""
    base_median, other_median = median(entry[base]), median(entry[other])
    return base_median, other_median, ratio(other_median, [base_median])


def verdict(value: float | None, threshold: float) -> str:
    """``pass`` when ``value <= threshold``, ``MISS`` above it, ``n/a`` when unmeasured."""
    if value is None:
        return "n/a"
    return "pass" if value <= threshold else "MISS"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def forward_rows(forward: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per measured (architecture, mode, batch): medians in seconds, ratio and status.

    Each entry of ``forward`` holds ``arch``, ``label``, ``mode``, ``batch`` and ``samples``: a mapping
    of implementation to its list of seconds, or to ``None`` where it could not run.
    """
    rows = []
    for entry in forward:
        medians = {impl: median(entry["samples"].get(impl)) for impl in IMPLS}
        value = ratio(medians["ours"], [medians["transformers"], medians["timm"]])
        rows.append(
            {
                "arch": entry["arch"],
                "label": entry.get("label", entry["arch"]),
                "mode": entry["mode"],
                "batch": entry["batch"],
                **medians,
                "ratio": value,
                "status": verdict(value, TARGETS["forward_ratio"]),
            }
        )
    return rows


def _import_medians(results: Mapping[str, Any]) -> dict[str, float | None]:
    return {name: median(samples) for name, samples in results.get("imports", {}).get("samples", {}).items()}


def target_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """The issue's targets: ``[target, measured, threshold, status]`` rows."""
    rows: list[list[str]] = []
    imports = _import_medians(results)
    torch_flags = results.get("imports", {}).get("torch_imported", {})
    if "python -c pass" in imports and "import backbones" in imports:
        bare, ours = imports["python -c pass"], imports["import backbones"]
        over = None if bare is None or ours is None else ours - bare
        status = verdict(over, TARGETS["import_over_bare_s"])
        if torch_flags.get("import backbones"):
            status = "MISS"
        rows.append(
            [
                "`import backbones` over bare `python -c pass`; torch not imported",
                f"{_ms(over)} ms; torch imported: {torch_flags.get('import backbones', 'n/a')}",
                "<= 30 ms, False",
                status,
            ]
        )
    if "backbones list" in imports:
        listed = imports["backbones list"]
        rows.append(
            [
                "`backbones list` (all plugins installed), whole process",
                f"{_ms(listed)} ms; torch imported: {torch_flags.get('backbones list', 'n/a')}",
                "<= 300 ms",
                verdict(listed, TARGETS["list_s"]),
            ]
        )
    whole = results.get("whole_process", {}).get("swin")
    if whole:
        wall = ratio(median(whole["ours"]["time_s"]), [median(whole["transformers"]["time_s"])])
        rss = ratio(median(whole["ours"]["rss_mib"]), [median(whole["transformers"]["rss_mib"])])
        rows.append(
            [
                "whole swin-tiny process: time (by the run's clock), ours / transformers",
                _x(wall),
                "<= 0.55x",
                verdict(wall, 0.55),
            ]
        )
        rows.append(["whole swin-tiny process: peak RSS, ours / transformers", _x(rss), "<= 0.70x", verdict(rss, 0.70)])
    rows += big_load_target_rows(results.get("bigload"))
    forward = [row for row in forward_rows(results.get("forward", [])) if row["mode"] == "fp32"]
    for batch in sorted({row["batch"] for row in forward}):
        rated = [row for row in forward if row["batch"] == batch and row["ratio"] is not None]
        if not rated:
            continue
        misses = [row["arch"] for row in rated if row["status"] == "MISS"]
        worst = max(rated, key=lambda row: row["ratio"])
        rows.append(
            [
                f"fp32 forward, batch {batch}: ours / min(transformers, timm), every architecture",
                f"worst {_x(worst['ratio'])} ({worst['arch']}); {len(rated) - len(misses)}/{len(rated)} pass"
                + (f"; MISS: {', '.join(misses)}" if misses else ""),
                "<= 1.00x",
                "MISS" if misses else "pass",
            ]
        )
    for entry in results.get("truncated", []):
        value = _medians_and_ratio(entry, "full", "truncated")[2]
        rows.append(
            [
                f"{entry['arch']} `out_indices=[1]` / all stages, batch {entry['batch']}",
                _x(value),
                "<= 0.35x",
                verdict(value, TARGETS["truncated_ratio"]),
            ]
        )
    return rows


def _header(results: Mapping[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    lines = [
        "# Benchmarks: backbones against transformers and timm",
        "",
        f"Generated by `{meta.get('command', 'python benchmarks/run.py')}` on {meta.get('date', '?')}"
        + (" (**quick run**: few repetitions, a subset)" if meta.get("quick") else "")
        + ". Raw samples: [`benchmarks/results.json`](../benchmarks/results.json); how to run and read this: "
        "[`benchmarks/README.md`](../benchmarks/README.md).",
        "",
        *[
            f"Section(s) {', '.join(update['sections'])} re-measured by `{update['command']}` on {update['date']}"
            + (f" (allocator: {update['allocator']})." if update.get("allocator") else ".")
            for update in meta.get("updates", [])
        ],
        "",
        f"- **Machine**: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"torch threads {machine.get('threads', '?')}; {machine.get('platform', '')}",
        "- **Versions**: "
        + ", ".join(
            f"{name} {versions[name]}"
            for name in ("python", "torch", "transformers", "timm", "backbones")
            if name in versions
        ),
        "- Timings were taken on a **shared, noisy 2-core machine**: implementations are interleaved "
        "(A, B, C, A, B, C, ...) so load bursts hit all alike, and every figure is a median. Ratios within "
        "a few percent of a threshold are within noise.",
        "- **ratio** = ours / min(transformers, timm) for forwards; ours / transformers elsewhere. "
        "A row is MISS when the ratio is above its target.",
    ]
    lines.append(
        f"- **Allocator**: {meta.get('allocator', 'glibc default')} for the run"
        + (" (each re-measurement above says its own)." if meta.get("updates") else ".")
        + " `--allocator pinned` (the default since 2026-12-05) fixes glibc's adaptive mmap and trim thresholds, "
        "so that the implementations timed in turn in one process do not tune the allocator for one another "
        "(see `benchmarks/run.py:pin_allocator`)."
    )
    if meta.get("clock") == "cpu":
        lines.append(
            "- **Clock: CPU time** (`--clock cpu`): every figure is CPU seconds (user + system) of the measuring "
            "process or of the fresh child process, not elapsed time. With one torch thread this equals the "
            "latency on an idle machine, and it leaves out the time spent waiting for a core, which on this "
            "oversubscribed machine was several times the work itself (wall-clock medians swung 3-5x between "
            "identical runs). Columns headed 'wall' hold CPU seconds in this run."
        )
    load = meta.get("load_average_start")
    if load:
        lines.append(
            f"- Load average (1, 5, 15 min) at the start: {', '.join(map(str, load))}; at the end: "
            f"{', '.join(map(str, meta.get('load_average_end', ['?'])))} (on {machine.get('cores', '?')} cores)."
        )
    if machine.get("threads") and machine.get("cores") and machine["threads"] < machine["cores"]:
        lines.append(
            f"- torch ran with {machine['threads']} thread(s) of {machine['cores']} cores (`--threads`): on an "
            "oversubscribed machine, multi-threaded kernels wait at every barrier for a descheduled thread, "
            "which inflates and scatters the timings several-fold; one thread keeps the comparison fair."
        )
    return lines


def _big_load_ratios(big: Mapping[str, Any]) -> dict[str, float | None]:
    checkpoint_mib = big["checkpoint_bytes"] / 2**20
    rss = {impl: median(big[impl]["peak_above_floor_mib"]) for impl in ("ours", "transformers")}
    return {
        "rss_ours": None if rss["ours"] is None else rss["ours"] / checkpoint_mib,
        "rss_transformers": None if rss["transformers"] is None else rss["transformers"] / checkpoint_mib,
        "wall": ratio(median(big["ours"]["time_s"]), [median(big["transformers"]["time_s"])]),
    }


def big_load_target_rows(big: Mapping[str, Any] | None) -> list[list[str]]:
    """The big-checkpoint targets (issue #25): memory above the ``import torch`` floor, and wall time."""
    if not big:
        return []
    ratios = _big_load_ratios(big)
    return [
        [
            f"{big['label']}: peak RSS above the `import torch` floor / checkpoint bytes (ours)",
            f"{_x(ratios['rss_ours'])} (transformers {_x(ratios['rss_transformers'])})",
            "<= 1.20x",
            verdict(ratios["rss_ours"], 1.20),
        ],
        [
            f"{big['label']}: fresh-process wall, ours / transformers",
            _x(ratios["wall"]),
            "<= 0.50x",
            verdict(ratios["wall"], 0.50),
        ],
    ]


def _big_load_section(big: Mapping[str, Any]) -> list[str]:
    rows = []
    for impl in ("ours", "transformers"):
        measured = big[impl]
        rows.append(
            [
                impl,
                f"{median(measured['time_s']):.2f}",
                f"{median(measured['load_s']):.2f}",
                f"{median(measured['load_and_read_s']):.2f}",
                f"{median(measured['peak_above_floor_mib']):.0f}",
                ", ".join(measured["dtypes"]),
                len(measured["time_s"]),
            ]
        )
    return [
        "",
        f"## Big sharded checkpoint: {big['label']}",
        "",
        f"{big['checkpoint_bytes'] / 2**30:.2f} GiB of bfloat16 tensors in shards with an index, loaded with "
        "`dtype=torch.bfloat16` in a fresh process. Wall: the whole process, seen by the parent. Inside it, "
        "from after `import torch` (the floor): import and load, then load and read one byte of every page of "
        "every parameter (a memory-mapped load is lazy: reading makes both count their weights). Peak RSS "
        "above the floor is the process's `VmHWM` minus its RSS after `import torch`.",
        "",
        _table(
            ["", "wall s", "import + load s", "+ read every page s", "peak RSS above floor MiB", "dtypes", "N"],
            rows,
        ),
    ]


def render_markdown(results: Mapping[str, Any], plot: str | None = None) -> str:
    """The whole ``docs/benchmarks.md`` text for ``results`` (the structure of ``results.json``)."""
    out = _header(results)
    out += [
        "",
        "## Targets (issue #8)",
        "",
        _table(["target", "measured", "threshold", "status"], target_rows(results)),
    ]

    imports = results.get("imports")
    if imports:
        medians = _import_medians(results)
        bare = medians.get("python -c pass")
        rows = [
            [
                f"`{name}`",
                _ms(value),
                "-" if bare is None or value is None or name == "python -c pass" else f"+{_ms(value - bare)}",
                len(imports["samples"][name]),
            ]
            for name, value in medians.items()
        ]
        out += [
            "",
            "## Start-up: whole fresh process",
            "",
            ("CPU time (user + system)" if results.get("meta", {}).get("clock") == "cpu" else "Wall time")
            + " of a fresh `python` process (median of N), interleaved.",
            "",
            _table(["command", "median ms", "over bare python ms", "N"], rows),
        ]

    whole = results.get("whole_process")
    if whole:
        rows = []
        for arch, impls in whole.items():
            wall = {impl: median(impls[impl]["time_s"]) for impl in impls}
            rss = {impl: median(impls[impl]["rss_mib"]) for impl in impls}
            rows.append(
                [
                    arch,
                    f"{wall.get('ours', 0):.2f}",
                    f"{wall.get('transformers', 0):.2f}",
                    _x(ratio(wall.get("ours"), [wall.get("transformers")])),
                    f"{rss.get('ours', 0):.0f}",
                    f"{rss.get('transformers', 0):.0f}",
                    _x(ratio(rss.get("ours"), [rss.get("transformers")])),
                    len(impls["ours"]["time_s"]),
                ]
            )
        out += [
            "",
            "## Whole process: import, load from a local directory, one 224x224 forward",
            "",
            "The checkpoint was saved by transformers (default-size config, all stages out). Peak RSS is the "
            "process's own high-water mark (`VmHWM`).",
            "",
            _table(
                [
                    "model",
                    "ours wall s",
                    "transformers wall s",
                    "wall ratio",
                    "ours peak RSS MiB",
                    "transformers peak RSS MiB",
                    "RSS ratio",
                    "N",
                ],
                rows,
            ),
        ]

    if results.get("bigload"):
        out += _big_load_section(results["bigload"])

    load = results.get("load")
    if load:
        rows = []
        for arch, samples in load.items():
            medians = {impl: median(values) for impl, values in samples.items()}
            rows.append(
                [
                    arch,
                    _ms(medians.get("ours")),
                    _ms(medians.get("transformers")),
                    _x(ratio(medians.get("ours"), [medians.get("transformers")])),
                    _ms(medians.get("timm_create")),
                ]
            )
        out += [
            "",
            "## `from_pretrained` in-process (imports warm)",
            "",
            "Same local checkpoint for both. timm loads no transformers checkpoint; its `create_model` "
            "(random init) is shown for scale only.",
            "",
            _table(["model", "ours ms", "transformers ms", "ratio", "timm create_model ms"], rows),
        ]

    forward = forward_rows(results.get("forward", []))
    if forward:
        rows = [
            [
                row["arch"],
                row["label"],
                row["mode"],
                row["batch"],
                _ms(row["ours"]),
                _ms(row["transformers"]),
                _ms(row["timm"]),
                _x(row["ratio"]),
                row["status"],
            ]
            for row in forward
        ]
        out += [
            "",
            "## Forward latency (224x224, inference mode)",
            "",
            "Medians; ours and transformers run the same weights. `channels_last`: model and input in "
            "channels-last memory format (convolutional networks); `bf16`: `torch.autocast('cpu', torch.bfloat16)`.",
            "",
            _table(FORWARD_COLUMNS, rows),
        ]
        if plot:
            out += ["", f"![forward latency]({plot})"]

    truncated = results.get("truncated")
    if truncated:
        rows = []
        for entry in truncated:
            full, part, value = _medians_and_ratio(entry, "full", "truncated")
            rows.append(
                [
                    entry["arch"],
                    entry["batch"],
                    _ms(full),
                    _ms(part),
                    _x(value),
                    verdict(value, TARGETS["truncated_ratio"]),
                ]
            )
        out += [
            "",
            "## Truncated forward: `out_indices=[1]` against all stages (ours)",
            "",
            _table(["model", "batch", "all stages ms", "out_indices=[1] ms", "ratio", "status"], rows),
        ]

    reparam = results.get("reparam")
    if reparam:
        rows = []
        for entry in reparam:
            folded, unfolded, speedup = _medians_and_ratio(entry, "folded", "unfolded")
            rows.append([entry["label"], entry["folded_blocks"], _ms(unfolded), _ms(folded), _x(speedup)])
        out += [
            "",
            "## Reparameterisation: `model.reparameterize()` (ours, fp32, batch 1, 224x224)",
            "",
            "Conv→BatchNorm pairs and multi-branch blocks folded into single convolutions (BiT: the weight "
            "standardisation computed once); speed-up is unfolded / folded latency.",
            "",
            _table(["model", "folded blocks", "unfolded ms", "folded ms", "speed-up"], rows),
        ]

    notes = results.get("notes", {})
    if notes:
        out += ["", "## Notes", ""] + [f"- **{arch}**: {note}" for arch, note in notes.items()]
    return "\n".join(out) + "\n"
