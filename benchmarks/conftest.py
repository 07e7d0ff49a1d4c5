"""Shared benchmark plumbing: every benchmark records tokens/s under a name, and
the terminal summary prints each contender's speed as a ratio to its baseline
measured in the same run (never an absolute time in a test)."""

from __future__ import annotations

import pytest

RESULTS: dict[str, float] = {}  # name -> tokens/s
# (contender, baseline, target ratio or None)
RATIOS: list[tuple[str, str, float | None]] = []


def record(benchmark, name: str, tokens: int) -> None:
    """Store tokens/s of the benchmark just run (pytest-benchmark's min time)."""
    seconds = benchmark.stats.stats.min
    RESULTS[name] = tokens / seconds
    benchmark.extra_info["tokens"] = tokens
    benchmark.extra_info["tokens_per_s"] = round(tokens / seconds, 2)


def ratio(contender: str, baseline: str, target: float | None = None) -> None:
    RATIOS.append((contender, baseline, target))


@pytest.fixture
def recorder():
    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("tokens/s and ratios (same run)")
    for name, speed in RESULTS.items():
        tr.write_line(f"{name:<40} {speed:10.1f} tokens/s")
    for contender, baseline, target in RATIOS:
        if contender in RESULTS and baseline in RESULTS:
            value = RESULTS[contender] / RESULTS[baseline]
            verdict = (
                ""
                if target is None
                else ("  ok" if value >= target else "  BELOW TARGET")
            )
            goal = "" if target is None else f" (target >= {target:g}x)"
            tr.write_line(f"{contender} / {baseline}: {value:.2f}x{goal}{verdict}")
