"""``gptkit bench compare`` on hand-made result files: a slowdown beyond the
noise band computed from the repeats is flagged, one within it is not."""

from __future__ import annotations

import json

import pytest

from gptkit.bench.results import compare_results, noise_band
from tests.conftest import assert_clean_error


def _row(name: str, seconds: list[float], tokens: int = 100, **extra) -> dict:
    return {
        "name": name,
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / min(seconds),
        **extra,
    }


def _result(*rows: dict, kind: str = "gptkit-bench-sampling", **settings) -> dict:
    return {
        "kind": kind,
        "schema": 1,
        "created": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu": "test CPU", "torch_threads": 1},
        "settings": {"model": "preset tiny", "max_new_tokens": 8, **settings},
        "rows": list(rows),
    }


A = _result(
    # spread 1 - 1.0/1.05 = 4.8%
    _row("greedy", [1.0, 1.02, 1.05], quality={"nll": 2.0, "self_bleu": 1.0}),
    # spread 1 - 1.0/1.2 = 16.7%
    _row("top-k", [1.0, 1.2]),
    _row("top-p", [1.0, 1.01]),
    _row("gone", [1.0, 1.01]),
)
B = _result(
    # 100/1.3 = 76.9 tokens/s: -23.1%, beyond the 4.8% band (B's spread is 1.5%)
    _row("greedy", [1.3, 1.31, 1.32], quality={"nll": 2.5, "self_bleu": 1.0}),
    # -9.1%: within the 16.7% band that A's own repeats showed
    _row("top-k", [1.1, 1.15]),
    # +25%, beyond a 1% band
    _row("top-p", [0.8, 0.808]),
    _row("new", [1.0, 1.01]),
)


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(A))
    b.write_text(json.dumps(B))
    return a, b


def test_noise_band_is_the_wider_spread_of_the_two_runs():
    assert noise_band([1.0, 1.05], [1.3, 1.32]) == pytest.approx(1 - 1 / 1.05)
    assert noise_band([1.0], [1.0]) is None  # single repeats: no spread
    assert noise_band([1.0], [1.0], min_band=0.05) == 0.05
    assert noise_band([1.0, 1.01], [1.0], min_band=0.05) == 0.05


def test_compare_flags_only_slowdowns_beyond_the_band():
    rows = {r.name: r for r in compare_results(A, B).rows}
    greedy = rows["greedy"]
    assert greedy.change == pytest.approx(1.0 / 1.3 - 1)
    assert greedy.band == pytest.approx(1 - 1.0 / 1.05)
    assert greedy.verdict == "SLOWER"
    assert greedy.quality["nll"] == [2.0, 2.5]
    assert rows["top-k"].change == pytest.approx(1.0 / 1.1 - 1)
    assert rows["top-k"].verdict == "within noise"
    assert rows["top-p"].verdict == "faster"
    assert rows["gone"].verdict == "only in A"
    assert rows["new"].verdict == "only in B"


def test_the_same_slowdown_is_noise_when_the_repeats_spread_wider():
    noisy_a = _result(_row("greedy", [1.0, 1.4]))  # spread 28.6%
    cmp = compare_results(noisy_a, B)
    assert [r.verdict for r in cmp.rows if r.name == "greedy"] == ["within noise"]


def test_cli_prints_the_changes_and_the_verdicts(cli_run, files):
    a, b = files
    result = cli_run("bench", "compare", str(a), str(b))
    assert result.exit_code == 0, result.output
    out = result.output
    greedy = next(line for line in out.splitlines() if line.startswith("greedy"))
    assert "-23.1%" in greedy and "±4.8%" in greedy and "SLOWER" in greedy
    topk = next(line for line in out.splitlines() if line.startswith("top-k"))
    assert "-9.1%" in topk and "within noise" in topk
    assert "1 slowdown(s) beyond the noise band: greedy" in out
    assert "greedy nll" in out  # the quality change is shown


def test_cli_exit_code_and_json(cli_run, files):
    a, b = files
    assert (
        cli_run("bench", "compare", str(a), str(b), "--fail-on-slowdown").exit_code == 1
    )
    assert (
        cli_run("bench", "compare", str(b), str(b), "--fail-on-slowdown").exit_code == 0
    )
    data = json.loads(cli_run("bench", "compare", str(a), str(b), "--json").output)
    assert data["slowdowns"] == ["greedy"]


def test_min_band_judges_single_repeats(cli_run, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result(_row("greedy", [1.0]))))
    b.write_text(json.dumps(_result(_row("greedy", [1.1]))))
    assert "no band (1 repeat)" in cli_run("bench", "compare", str(a), str(b)).output
    out = cli_run("bench", "compare", str(a), str(b), "--min-band", "0.05").output
    assert "SLOWER" in out


def test_settings_that_differ_are_noted(cli_run, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_result(_row("greedy", [1.0, 1.01]))))
    b.write_text(json.dumps(_result(_row("greedy", [1.0, 1.01]), max_new_tokens=50)))
    out = cli_run("bench", "compare", str(a), str(b)).output
    assert "settings changed: max_new_tokens 8 -> 50" in out


def test_bad_result_files(cli_run, tmp_path, files):
    a, _ = files
    not_json = tmp_path / "x.json"
    not_json.write_text("{oops")
    assert_clean_error(cli_run("bench", "compare", str(a), str(not_json)), "not a JSON")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    assert_clean_error(
        cli_run("bench", "compare", str(a), str(other)), "not a gptkit bench result"
    )
    bad_row = tmp_path / "bad.json"
    bad_row.write_text(json.dumps(_result({"name": "greedy", "seconds": []})))
    assert_clean_error(cli_run("bench", "compare", str(a), str(bad_row)), "row 0")
    training = tmp_path / "training.json"
    training.write_text(json.dumps(_result(kind="gptkit-bench-training")))
    assert_clean_error(
        cli_run("bench", "compare", str(a), str(training)), "cannot compare"
    )
    assert_clean_error(
        cli_run("bench", "compare", str(a), str(tmp_path / "missing.json")),
        "does not exist",
    )
