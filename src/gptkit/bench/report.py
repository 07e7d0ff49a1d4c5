"""Benchmark results as text tables and PNG charts (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptkit.bench.measure import provenance_lines, speed_spread


def _num(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _limits_line(limits: dict[str, Any]) -> str:
    peaks = ", ".join(f"{k} {v:g}" for k, v in limits["tflops"].items())
    return (
        f"limits ({limits['source']}): memory bandwidth"
        f" {limits['bandwidth_gbs']:g} GB/s, matmul peak TFLOP/s: {peaks}"
    )


def features_line(mach: dict[str, Any]) -> str | None:
    """``cpu features: avx2 fma ...; torch: AVX512`` (None for older results)."""
    feats = mach.get("cpu_features")
    if not feats:
        return None
    flags = " ".join(feats.get("flags", [])) or "none of the listed"
    return f"cpu features: {flags}; torch capability {feats.get('torch_capability')}"


def format_sampling(result: dict[str, Any]) -> str:
    """The speed table and the quality table of a sampling result."""
    s, lim = result["settings"], result["limits"]
    head = [
        f"model: {s['model']}, {s['parameters'] / 1e6:.1f}M parameters,"
        f" {s['dtype']} on {s['device']}, batch size 1",
        f"prompts: {len(s['prompts'])} ({s['prompts_source']}),"
        f" {s['max_new_tokens']} new tokens each; {s['warmup']} warm-up +"
        f" {s['repeats']} timed passes; seed {s['seed']}",
        *provenance_lines(result),
        _limits_line(lim),
        f"decode bound: {lim['decode_bound_tokens_per_s']:,.1f} tokens/s"
        f" ({s['weight_bytes_per_token'] / 1e6:.1f} MB of weights read per token)",
    ]
    speed_rows, quality_rows = [], []
    search = False
    for row in result["rows"]:
        name = row["name"]
        if row.get("strategy") == "search" or (
            "num_beams" in row.get("generate_kwargs", {})
            and row["generate_kwargs"]["num_beams"] > 1
        ):
            name += " *"
            search = True
        vs = row.get("vs", {})
        stats = row.get("sampler_stats")
        if stats:
            name += f" [accept {stats['acceptance_rate']:.0%}]"
        speed_rows.append(
            [
                name,
                _num(row["tokens_per_s"]),
                _num(row.get("tokens_per_s_median")),
                _pct(speed_spread(row["seconds"]), 0),
                _num(row["ttft_ms"]),
                _num(row["latency_ms"]["p50"], 2),
                _num(row["latency_ms"]["p90"], 2),
                _num(
                    row.get("weight_bytes_per_token", s["weight_bytes_per_token"]) / 1e6
                ),
                _pct(row["bandwidth_fraction"]),
                _num(row["peak_memory_mib"]),
                _ratio(vs.get("base") or vs.get("greedy")),
                _ratio(vs.get("no-cache")),
                _ratio(vs.get("transformers")),
            ]
        )
        q = row["quality"]
        quality_rows.append(
            [
                name,
                _num(q["nll"], 3),
                _num(q["distinct_1"], 3),
                _num(q["distinct_2"], 3),
                _num(q["distinct_3"], 3),
                _num(q["rep_4"], 3),
                _num(q["self_bleu"], 3),
            ]
        )
    speed = table(
        [
            "speed",
            "tokens/s",
            "median",
            "spread",
            "TTFT ms",
            "p50 ms",
            "p90 ms",
            "MB/token",
            "of bound",
            "peak MiB",
            "vs base",
            "vs no-cache",
            "vs transformers",
        ],
        speed_rows,
    )
    quality = table(
        [
            "quality",
            "NLL",
            "distinct-1",
            "distinct-2",
            "distinct-3",
            "rep-4",
            "self-BLEU",
        ],
        quality_rows,
    )
    notes = [
        "tokens/s: best timed pass (prefill included); median: the median"
        " pass's; spread: how far the"
        " slowest pass's tokens/s fell below the best; p50/p90: time between"
        " tokens; of bound: decode tokens/s / decode bound; peak MiB: "
        + _memory_note(result),
        "NLL: nats per generated token under the model; distinct-n and rep-4"
        " (repeated 4-grams) over token ids; self-BLEU (BLEU-4, add-one smoothing)"
        " across the repeats' samples of each prompt",
    ]
    if any((r["bandwidth_fraction"] or 0) > 1 for r in result["rows"]):
        notes.append(
            "above 100% of the bound: the measured bandwidth is a lower bound"
            " (other processes were using the memory bus while it was measured)"
        )
    if "random weights" in s["model"]:
        notes.append(
            "random weights: the quality columns only exercise the metrics; use"
            " --weights for text worth judging"
        )
    if search:
        notes.append(
            "* search strategy: emits tokens at the end; TTFT and latencies are"
            " its search steps (one forward pass each)"
        )
    return "\n".join([*head, "", speed, "", quality, "", *notes])


def _memory_note(result: dict[str, Any]) -> str:
    if result["settings"]["device"].startswith("cuda"):
        return "tensor memory above the model (torch.cuda.max_memory_allocated)"
    return "resident memory above the loaded model (VmHWM, /proc/self/status)"


def format_training(result: dict[str, Any]) -> str:
    """The training table: tokens/s, the ratio to the baseline and MFU per
    variant; with a profile, where each variant's step spends its time."""
    s, lim, mach = result["settings"], result["limits"], result["machine"]
    threads = f"{mach['torch_threads']} torch threads"
    if s.get("baseline"):
        threads += " (the baseline and gptkit alike)"
    head = [
        f"model: {s['model']}, {s['matmul_parameters'] / 1e6:.1f}M matmul parameters,"
        f" context {s['context_length']}, batch {s['batch_size']}, on {s['device']}",
        f"step: {s.get('step', 'training step')}; {s['optimizer']}; {s['warmup']}"
        f" warm-up + {s['repeats']} timed repeats of {s['steps']} steps; seed"
        f" {s['seed']}",
        *provenance_lines(result),
        f"threads: {threads}",
        _limits_line(lim),
        f"model FLOPs per token: {s['flops_per_token'] / 1e6:,.1f} M (6N + 12LdT)",
    ]
    with_base = any(r.get("vs_baseline") is not None for r in result["rows"])
    rows = [
        [
            r["name"],
            _num(r["tokens_per_s"]),
            _pct(speed_spread(r["seconds"]), 0),
            *(
                [_ratio(r["vs_baseline"]), _ratio(r["vs_baseline_median"])]
                if with_base
                else []
            ),
            _num(r["achieved_tflops"], 4),
            f"{r['peak_dtype']} {lim['tflops'].get(r['peak_dtype'], 0):g}",
            _pct(r["mfu"]),
            _num(r["peak_memory_mib"]),
            _num(r["warmup_seconds"], 1),
            _num(r["final_loss"], 3),
        ]
        for r in result["rows"]
    ]
    headers = ["training", "tokens/s", "spread"]
    if with_base:
        headers += ["x baseline", "(median)"]
    headers += ["TFLOP/s", "peak TFLOP/s", "MFU", "peak MiB", "warm-up s", "loss"]
    body = table(headers, rows)
    parts = [*head, "", body]
    profiled = [r for r in result["rows"] if r.get("profile")]
    if profiled:
        parts += ["", _profile_table(profiled)]
    return "\n".join(parts)


def _profile_table(rows: Sequence[dict[str, Any]]) -> str:
    """Shares of one profiled step: phases, operator categories, matmul rate."""
    from gptkit.bench.profile import CATEGORIES, PHASES

    phases = [*PHASES, "other"]
    short = {"forward": "fwd", "backward": "bwd", "optimizer": "opt", "other": "rest"}
    header = [
        "profiled step",
        "seconds",
        *(short[p] for p in phases),
        *(c[:6] for c in CATEGORIES),
        "matmul TFLOP/s",
    ]
    lines = []
    for r in rows:
        prof = r["profile"]
        shares = prof["phases"] or {}
        lines.append(
            [
                r["name"],
                _num(prof["seconds"], 2),
                *(_pct(shares.get(p), 0) if shares else "-" for p in phases),
                *(_pct(prof["categories"][c], 0) for c in CATEGORIES),
                _num(prof["matmul_tflops"], 4),
            ]
        )
    note = (
        f"profile ({rows[0]['profile']['time_source']}): shares of the step's"
        " phases (forward, backward, optimizer, the rest), then each operator"
        " category's share of the operators' own time; matmul TFLOP/s: 6N x"
        " tokens / the time in matrix products"
    )
    return "\n".join([note, table(header, lines)])


# -- charts ---------------------------------------------------------------------


def plot_result(result: dict[str, Any], path: str | Path) -> None:
    """A PNG chart of a sampling or training result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    names = [r["name"] for r in rows]
    speeds = [r["tokens_per_s"] for r in rows]
    if result["kind"].endswith("sampling"):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.5 * len(rows) + 2.5))
        colors = ["tab:blue" if r["kind"] == "sampler" else "tab:gray" for r in rows]
        ax1.barh(names, speeds, color=colors)
        ax1.invert_yaxis()
        ax1.set_xlabel("tokens/s (best pass; grey: baselines)")
        bound = result["limits"]["decode_bound_tokens_per_s"]
        if bound <= 3 * max(speeds):
            ax1.axvline(bound, color="tab:red", linestyle="--", label="bandwidth bound")
            ax1.legend(loc="lower right")
        samplers = [r for r in rows if r["kind"] == "sampler"]
        metrics = [
            ("distinct_2", "distinct-2"),
            ("rep_4", "rep-4"),
            ("self_bleu", "self-BLEU"),
        ]
        width = 0.8 / len(metrics)
        for i, (key, label) in enumerate(metrics):
            values = [r["quality"][key] or 0.0 for r in samplers]
            ax2.barh(
                [j + i * width for j in range(len(samplers))],
                values,
                height=width,
                label=label,
            )
        ax2.set_yticks([j + width for j in range(len(samplers))])
        ax2.set_yticklabels([r["name"] for r in samplers])
        ax2.invert_yaxis()
        ax2.set_xlim(0, 1.05)
        ax2.set_xlabel("quality (token ids)")
        ax2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(f"gptkit bench sampling: {result['settings']['model']}")
    else:
        fig, ax1 = plt.subplots(figsize=(8, 0.5 * len(rows) + 2))
        colors = ["tab:gray" if r["kind"] == "baseline" else "tab:blue" for r in rows]
        ax1.barh(names, speeds, color=colors)
        ax1.invert_yaxis()
        for y, r in enumerate(rows):
            if r["mfu"] is not None:
                ax1.text(
                    r["tokens_per_s"], y, f" MFU {100 * r['mfu']:.1f}%", va="center"
                )
        ax1.set_xlabel("training tokens/s (best repeat; grey: the baseline)")
        fig.suptitle(f"gptkit bench training: {result['settings']['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
