"""MkDocs hook: the benchmarks page's tables come from the committed
``gptkit bench --json`` results in ``docs/benchmarks/results/``, one column per
machine, each column headed by where and how it was measured.

A page holding the line ``<!-- gptkit-bench-results -->`` gets the tables in its
place. Results of the same benchmark (same kind, model and settings) measured on
different machines become columns of one table, so measuring again on another
machine adds a column instead of overwriting a figure. Run as a script, it prints
the markdown.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

MARKER = "<!-- gptkit-bench-results -->"
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def load_results(folder: Path = RESULTS) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, result)`` for every ``*.json`` result, sorted by name."""
    out = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not str(data.get("kind", "")).startswith("gptkit-bench-"):
            raise ValueError(f"{path} is not a gptkit bench result")
        out.append((path.name, data))
    return out


def machine_label(result: dict[str, Any]) -> str:
    """The CPU (or GPU), its relevant features and its cores."""
    mach = result["machine"]
    features = mach.get("cpu_features")
    if isinstance(features, dict):  # {"model", "flags", "torch_capability"}
        features = features.get("flags")
    label = mach.get("cpu", "?")
    if features:
        label += " (" + ", ".join(features) + ")"
    elif features is not None:
        label += " (no AVX2)"
    label += f", {mach.get('usable_cores', '?')} cores"
    if mach.get("gpu"):
        label += f", {mach['gpu']}"
    return label


def provenance(name: str, result: dict[str, Any]) -> str:
    """One line: the command, date, versions, threads and load of a result."""
    mach = result["machine"]
    commit = mach.get("gptkit_commit") or "unknown commit"
    load = mach.get("load_average_1min")
    end = mach.get("load_average_1min_end")
    load_text = "unknown" if load is None else f"{load:g}"
    if end is not None:
        load_text += f" at the start, {end:g} at the end"
    limits = result.get("limits", {})
    peaks = ", ".join(
        f"{k} {v * 1000:,.1f} GFLOP/s" for k, v in limits.get("tflops", {}).items()
    )
    return (
        f"`{name}`: `{mach.get('command', '?')}` on {result.get('created', '?')};"
        f" gptkit {mach.get('gptkit', '?')} ({commit}), torch {mach.get('torch', '?')},"
        f" Python {mach.get('python', '?')}; {mach.get('torch_threads', '?')} torch"
        f" threads; load average {load_text}; measured limits: memory bandwidth"
        f" {limits.get('bandwidth_gbs', 0):g} GB/s, matrix-product peak {peaks}"
    )


def _speeds(row: dict[str, Any]) -> list[float]:
    return [row["tokens"] / s for s in row["seconds"]]


def _group_key(result: dict[str, Any]) -> tuple:
    s = result["settings"]
    if result["kind"] == "gptkit-bench-sampling":
        return (
            result["kind"],
            s.get("model"),
            s.get("dtype"),
            s.get("max_new_tokens"),
            tuple(s.get("prompts", [])),
            s.get("repeats"),
        )
    return (
        result["kind"],
        s.get("model"),
        s.get("context_length"),
        s.get("batch_size"),
        s.get("steps"),
    )


def _title(result: dict[str, Any]) -> str:
    s = result["settings"]
    if result["kind"] == "gptkit-bench-sampling":
        return (
            f"Sampling: {s['model']}, {s['dtype']}, batch 1,"
            f" {len(s['prompts'])} prompt(s) x {s['max_new_tokens']} new tokens,"
            f" {s['repeats']} timed rounds"
        )
    return (
        f"Training step: {s['model']}, context {s['context_length']},"
        f" batch {s['batch_size']}, {s['steps']} steps per repeat,"
        f" {s['repeats']} repeats"
    )


def _sampling_cell(row: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    speeds = _speeds(row)
    cell = f"{statistics.median(speeds):,.1f} (best {max(speeds):,.1f})"
    base = rows.get(row.get("sampler", ""))
    if base is not None and row["name"].startswith(base["name"] + " "):
        ratio = statistics.median(speeds) / statistics.median(_speeds(base))
        cell += f", {ratio:.2f}x {base['name']}"
    twin = rows.get(f"transformers {row['name']}")
    if twin is not None:
        ratio = statistics.median(speeds) / statistics.median(_speeds(twin))
        cell += f", {ratio:.2f}x transformers"
    return cell


def _training_cell(row: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    speeds = _speeds(row)
    cell = f"{statistics.median(speeds):,.1f} (best {max(speeds):,.1f})"
    base = rows.get("baseline")
    if base is not None and base is not row:
        ratio = statistics.median(speeds) / statistics.median(_speeds(base))
        cell += f", {ratio:.2f}x baseline"
    if row.get("mfu") is not None:
        cell += f", MFU {100 * row['mfu']:.1f}%"
    return cell


def results_markdown(folder: Path = RESULTS) -> str:
    """The tables: one per benchmark, one column per machine."""
    groups: dict[tuple, list[tuple[str, dict[str, Any]]]] = {}
    for name, result in load_results(folder):
        groups.setdefault(_group_key(result), []).append((name, result))
    parts = []
    for members in groups.values():
        first = members[0][1]
        sampling = first["kind"] == "gptkit-bench-sampling"
        cell = _sampling_cell if sampling else _training_cell
        row_names: list[str] = []
        for _, result in members:
            row_names += [
                r["name"] for r in result["rows"] if r["name"] not in row_names
            ]
        header = ["row", *(machine_label(r) for _, r in members)]
        lines = [
            f"### {_title(first)}",
            "",
            "tokens/s: the median of the timed repeats, the best in brackets;"
            + (
                " ratios divide medians: a quantized row by its sampler's fp32 row,"
                " a gptkit row by transformers' `generate` on the same weights in"
                " the same run."
                if sampling
                else " ratios are medians against the book-style step in the same"
                " run; MFU of the best repeat against the measured peak of the"
                " dtype the matrix products run in."
            ),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for row_name in row_names:
            cells = [row_name]
            for _, result in members:
                rows = {r["name"]: r for r in result["rows"]}
                cells.append(cell(rows[row_name], rows) if row_name in rows else "-")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"- {provenance(n, r)}" for n, r in members]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, results_markdown())


if __name__ == "__main__":
    print(results_markdown())
