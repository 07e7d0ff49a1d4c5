"""Result files and ``gptkit bench compare`` (torch-free).

A result is one JSON object: ``kind`` (``gptkit-bench-sampling`` or
``gptkit-bench-training``), ``schema``, ``created``, ``machine`` (CPU, cores,
threads, GPU, versions, load average), ``settings``, ``limits`` and ``rows``;
each row has a ``name``, the ``seconds`` of every timed repeat, ``tokens`` per
repeat and ``tokens_per_s`` (of the best repeat), plus its other measurements.

**Noise band.** Each row's repeats give its spread: how far the slowest
repeat's speed fell below the best one's, ``(best - worst) / best`` tokens/s
(:func:`gptkit.bench.measure.speed_spread`). Comparing a row of A with the same
row of B, the band is the larger of the two spreads (and of ``--min-band``): a
run's best repeat may land anywhere in the range its repeats showed, so a change
within the wider of the two ranges is not evidence of anything. The change is
``tokens_per_s(B) / tokens_per_s(A) - 1`` (best repeats); a drop larger than the
band is flagged as SLOWER, a rise larger than the band reported as faster. A row
with a single repeat has no spread, so with ``--min-band 0`` a pair of such rows
cannot be judged (more repeats, or a floor, fix it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gptkit.bench.measure import speed_spread
from gptkit.errors import GptkitError

KINDS = ("gptkit-bench-sampling", "gptkit-bench-training")
#: Quality metrics shown by compare (absolute change).
QUALITY_KEYS = ("nll", "distinct_2", "rep_4", "self_bleu")
#: Settings whose difference makes a comparison suspect.
SETTING_KEYS = (
    "model",
    "device",
    "dtype",
    "max_new_tokens",
    "prompts",
    "repeats",
    "batch_size",
    "context_length",
    "steps",
)
MACHINE_KEYS = ("cpu", "gpu", "torch_threads", "torch", "gptkit")


def save_result(result: dict[str, Any], path: str | Path) -> None:
    """Write a result as indented JSON (parent directories created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def load_result(path: str | Path) -> dict[str, Any]:
    """Read and check a result file; bad files are a one-line GptkitError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GptkitError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GptkitError(f"{path} is not a JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise GptkitError(
            f"{path} is not a gptkit bench result (no 'kind' of {' or '.join(KINDS)})"
        )
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise GptkitError(f"{path}: 'rows' must be a list")
    for i, row in enumerate(rows):
        seconds = row.get("seconds") if isinstance(row, dict) else None
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("name"), str)
            and isinstance(seconds, list)
            and seconds
            and all(isinstance(s, (int, float)) and s > 0 for s in seconds)
            and isinstance(row.get("tokens_per_s"), (int, float))
        )
        if not ok:
            raise GptkitError(
                f"{path}: row {i} needs a name, positive 'seconds' per repeat"
                " and 'tokens_per_s'"
            )
    return data


def noise_band(
    a_seconds: list[float], b_seconds: list[float], min_band: float = 0.0
) -> float | None:
    """max(spread A, spread B, min_band); None when neither run has repeats
    and no floor is given."""
    spreads = [
        s for s in (speed_spread(a_seconds), speed_spread(b_seconds)) if s is not None
    ]
    if not spreads and min_band <= 0:
        return None
    return max([*spreads, min_band])


@dataclass
class RowChange:
    """One row of a comparison."""

    name: str
    a_tokens_per_s: float | None
    b_tokens_per_s: float | None
    change: float | None = None  # tokens/s: B / A - 1
    band: float | None = None
    verdict: str = ""
    quality: dict[str, list[float | None]] = field(default_factory=dict)


@dataclass
class Comparison:
    """Every row's change, notes on differing settings, and whether any row
    slowed down by more than its noise band."""

    kind: str
    rows: list[RowChange]
    notes: list[str]

    @property
    def slowdowns(self) -> list[RowChange]:
        return [r for r in self.rows if r.verdict == "SLOWER"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": [asdict(r) for r in self.rows],
            "notes": self.notes,
            "slowdowns": [r.name for r in self.slowdowns],
        }


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    notes = []
    for section, keys in (("settings", SETTING_KEYS), ("machine", MACHINE_KEYS)):
        sa, sb = a.get(section) or {}, b.get(section) or {}
        for key in keys:
            if key in sa and key in sb and sa[key] != sb[key]:
                va, vb = sa[key], sb[key]
                if isinstance(va, list) or isinstance(vb, list):
                    va, vb = f"{len(va)} items", f"{len(vb)} items"
                notes.append(f"{section} changed: {key} {va} -> {vb}")
    return notes


def compare_results(
    a: dict[str, Any], b: dict[str, Any], min_band: float = 0.0
) -> Comparison:
    """Compare two results row by row (matched by name); see the module docs."""
    if a["kind"] != b["kind"]:
        raise GptkitError(f"cannot compare a {a['kind']} result with a {b['kind']} one")
    rows_a = {r["name"]: r for r in a["rows"]}
    rows_b = {r["name"]: r for r in b["rows"]}
    names = list(rows_a) + [n for n in rows_b if n not in rows_a]
    out = []
    for name in names:
        ra, rb = rows_a.get(name), rows_b.get(name)
        if ra is None or rb is None:
            only = "A" if rb is None else "B"
            tps_a = ra["tokens_per_s"] if ra else None
            tps_b = rb["tokens_per_s"] if rb else None
            out.append(RowChange(name, tps_a, tps_b, verdict=f"only in {only}"))
            continue
        tps_a, tps_b = float(ra["tokens_per_s"]), float(rb["tokens_per_s"])
        change = tps_b / tps_a - 1
        band = noise_band(ra["seconds"], rb["seconds"], min_band)
        if band is None:
            verdict = "no band (1 repeat)"
        elif -change > band:
            verdict = "SLOWER"
        elif change > band:
            verdict = "faster"
        else:
            verdict = "within noise"
        quality = {}
        qa, qb = ra.get("quality") or {}, rb.get("quality") or {}
        for key in QUALITY_KEYS:
            if key in qa or key in qb:
                quality[key] = [qa.get(key), qb.get(key)]
        out.append(RowChange(name, tps_a, tps_b, change, band, verdict, quality))
    return Comparison(a["kind"], out, _differences(a, b))


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_comparison(cmp: Comparison, a_label: str, b_label: str) -> str:
    """The comparison as text: speed per row, then quality changes."""
    from gptkit.bench.report import table

    speed = table(
        ["row", "tokens/s A", "tokens/s B", "change", "noise band", "verdict"],
        [
            [
                r.name,
                _fmt(r.a_tokens_per_s, ",.1f"),
                _fmt(r.b_tokens_per_s, ",.1f"),
                _fmt(None if r.change is None else 100 * r.change, "+.1f")
                + ("%" if r.change is not None else ""),
                ("±" + _fmt(100 * r.band, ".1f") + "%") if r.band is not None else "-",
                r.verdict,
            ]
            for r in cmp.rows
        ],
    )
    lines = [f"A: {a_label}", f"B: {b_label}", "", speed]
    quality_rows = []
    for r in cmp.rows:
        for key, (qa, qb) in r.quality.items():
            if qa == qb:
                continue
            delta = None if qa is None or qb is None else qb - qa
            quality_rows.append(
                [
                    f"{r.name} {key}",
                    _fmt(qa, ".3f"),
                    _fmt(qb, ".3f"),
                    _fmt(delta, "+.3f"),
                ]
            )
    if quality_rows:
        lines += ["", table(["quality", "A", "B", "change"], quality_rows)]
    elif any(r.quality for r in cmp.rows):
        lines += ["", "quality: the same in A and B (" + ", ".join(QUALITY_KEYS) + ")"]
    lines += [""] + [f"note: {n}" for n in cmp.notes]
    flagged = cmp.slowdowns
    if flagged:
        lines.append(
            f"{len(flagged)} slowdown(s) beyond the noise band: "
            + ", ".join(r.name for r in flagged)
        )
    else:
        lines.append("no slowdown beyond the noise band")
    lines.append(
        "change: tokens/s of B over A (best repeats); noise band: the wider spread"
        " (best - worst) / best tokens/s of the two runs' repeats"
    )
    return "\n".join(lines).rstrip() + "\n"
