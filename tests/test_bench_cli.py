"""``gptkit bench sampling`` and ``gptkit bench training`` as a user runs them:
tiny presets, a few tokens. Every installed sampler (the example plugin's
``locally-typical`` included) gets a row without any change to gptkit; the
baselines do the same work as the samplers they are compared with; bad input is
one line and exit code 2."""

from __future__ import annotations

import json
import math
from importlib import metadata

import pytest
import torch

from gptkit.core.registry import get_registry
from tests.conftest import assert_clean_error
from tests.test_cli import HEAVY, _modules_after_cli

TINY = ("--preset", "tiny", "--max-new-tokens", "4", "--repeats", "2")


def _example_installed() -> bool:
    try:
        metadata.distribution("gptkit-example-plugin")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Every effort moves you\n\nThe function returns\n")
    return path


def test_every_installed_sampler_gets_a_row(cli_run, prompts, tmp_path):
    out, chart = tmp_path / "r.json", tmp_path / "r.png"
    result = cli_run(
        "bench", "sampling", *TINY, "--prompts", str(prompts), "--json",
        "--out", str(out), "--plot", str(chart),
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    assert json.loads(out.read_text()) == data
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = [r["name"] for r in data["rows"]]
    registry = get_registry().samplers
    assert names == [
        n
        for n in registry.names()
        if not getattr(registry.get(n), "required_options", ())
    ]
    if _example_installed():
        assert "locally-typical" in names
    s = data["settings"]
    assert s["prompts"] == ["Every effort moves you", "The function returns"]
    assert (s["max_new_tokens"], s["repeats"], s["warmup"]) == (4, 2, 1)
    for key in ("cpu", "usable_cores", "torch", "gptkit", "torch_threads"):
        assert data["machine"][key] is not None
    assert data["machine"]["torch_threads"] == 1  # the CPU default
    assert data["limits"]["bandwidth_gbs"] > 0 and data["limits"]["tflops"]["fp32"] > 0
    for row in data["rows"]:
        assert row["tokens"] == 2 * 4 and len(row["seconds"]) == 2
        assert row["tokens_per_s"] == pytest.approx(8 / min(row["seconds"]))
        assert (
            0 < row["ttft_ms"]
            and 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"]
        )
        assert row["bandwidth_fraction"] > 0
        assert [len(ids) for rep in row["outputs"] for ids in rep] == [4] * 4
        q = row["quality"]
        assert q["nll"] is not None and q["nll"] >= 0
        assert all(0 <= q[k] <= 1 for k in ("distinct_1", "distinct_2", "rep_4"))
    greedy = next(r for r in data["rows"] if r["name"] == "greedy")
    assert greedy["quality"]["self_bleu"] == pytest.approx(1.0)  # deterministic


def test_table_shows_speed_and_quality(cli_run, prompts):
    samplers = "greedy,locally-typical" if _example_installed() else "greedy,top-k"
    result = cli_run(
        "bench", "sampling", *TINY, "--samplers", samplers, "--prompts", str(prompts)
    )
    assert result.exit_code == 0, result.stderr
    out = result.output
    for header in ("tokens/s", "TTFT ms", "p50 ms", "p90 ms", "peak MiB", "self-BLEU"):
        assert header in out
    if _example_installed():
        assert sum(line.startswith("locally-typical") for line in out.splitlines()) == 2
    assert "bench: round 1/2: greedy" in result.stderr  # progress goes to stderr


def test_baselines_do_the_same_work(cli_run, prompts):
    pytest.importorskip("transformers")
    result = cli_run(
        "bench", "sampling", *TINY, "--samplers", "greedy,top-p,beam",
        "--prompts", str(prompts),
        "--baseline", "no-cache", "--baseline", "transformers", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["rows"]}
    assert set(rows) == {
        "greedy", "top-p", "beam", "no-cache greedy (book)",
        "transformers greedy", "transformers top-p", "transformers beam",
    }  # fmt: skip
    greedy = rows["greedy"]
    # identical weights: the book's loop and transformers write greedy's tokens
    assert rows["no-cache greedy (book)"]["outputs"] == greedy["outputs"]
    assert rows["transformers greedy"]["outputs"] == greedy["outputs"]
    assert rows["transformers beam"]["outputs"] == rows["beam"]["outputs"]
    assert rows["transformers top-p"]["generate_kwargs"]["top_p"] == 0.9
    for name in ("greedy", "top-p", "beam"):
        vs = rows[name]["vs"]
        expected = (
            rows[name]["tokens_per_s"] / rows[f"transformers {name}"]["tokens_per_s"]
        )
        assert vs["transformers"] == pytest.approx(expected)
        assert vs["no-cache"] == pytest.approx(
            rows[name]["tokens_per_s"] / rows["no-cache greedy (book)"]["tokens_per_s"]
        )


def test_sampler_options(cli_run, prompts):
    result = cli_run(
        "bench", "sampling", *TINY, "--samplers", "top-p", "-o", "top-p.top_p=0.5",
        "--prompts", str(prompts), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)["rows"]
    # the option given, over the benchmark's default temperature for top-p
    assert row["options"]["top_p"] == 0.5 and row["options"]["temperature"] == 0.8


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--samplers", "greedy,nope"), "unknown sampler 'nope'"),
        (("--samplers", ","), "--samplers needs at least one name"),
        (("--repeats", "0"), "--repeats"),
        (("--bogus",), "No such option '--bogus'"),
        (("--baseline", "vllm"), "--baseline"),
        (("-o", "top_p=0.5"), "SAMPLER.KEY=VALUE"),
        (("--samplers", "greedy", "-o", "top-p.top_p=0.5"), "not benchmarked"),
        (("--samplers", "top-p", "-o", "top-p.top_p=2"), "top_p"),
        (("--weights", "hf:gpt2", "--preset", "tiny"), "not both"),
        (("--prompts", "/no/such/file.txt"), "does not exist"),
    ],
)
def test_bad_input_is_one_line(cli_run, args, fragment):
    assert_clean_error(cli_run("bench", "sampling", *args), fragment)


def test_empty_prompts_file(cli_run, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert_clean_error(
        cli_run("bench", "sampling", "--prompts", str(empty)), "has no prompts"
    )
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    assert_clean_error(
        cli_run("bench", "sampling", "--prompts", str(binary)), "not UTF-8"
    )


def test_training_times_the_trainers_step_against_the_baseline(cli_run, monkeypatch):
    from gptkit.core.training.trainer import Trainer

    calls: list[str] = []
    real_step = Trainer.train_step

    def counted(self, *args, **kwargs):
        calls.append(self.settings.precision)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", counted)
    result = cli_run(
        "bench", "training", "--preset", "tiny", "--precisions", "fp32,bf16-true",
        "--batch-size", "2", "--context-length", "8", "--steps", "2",
        "--repeats", "2", "--profile", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert [r["name"] for r in rows] == ["baseline", "fp32", "bf16-true"]
    # gptkit's rows are Trainer.train_step: (1 warm-up + 2 repeats) x 2 steps,
    # and one profiled step.
    assert calls == ["fp32"] * 7 + ["bf16-true"] * 7
    base = rows[0]
    assert base["kind"] == "baseline" and base["vs_baseline"] == 1.0
    assert data["machine"]["torch_threads"] == torch.get_num_threads()  # default
    assert data["settings"]["flops_per_token"] > 0
    for row in rows:
        assert row["tokens"] == 2 * 2 * 8
        assert row["tokens_per_s"] == pytest.approx(32 / min(row["seconds"]))
        assert row["vs_baseline"] == pytest.approx(
            row["tokens_per_s"] / base["tokens_per_s"]
        )
        assert row["mfu"] == pytest.approx(
            data["settings"]["flops_per_token"]
            * row["tokens_per_s"]
            / (data["limits"]["tflops"][row["peak_dtype"]] * 1e12)
        )
        assert math.isfinite(row["final_loss"])
        profile = row["profile"]
        assert sum(profile["categories"].values()) == pytest.approx(1.0)
        assert sum(profile["phases"].values()) == pytest.approx(1.0)
        assert profile["categories"]["matmul"] > 0 and profile["matmul_tflops"] > 0
    assert [r["peak_dtype"] for r in rows] == ["fp32", "fp32", "bf16"]
    table = cli_run(
        "bench", "training", "--preset", "tiny", "--precisions", "fp32",
        "--no-baseline", "--batch-size", "1", "--context-length", "8",
        "--steps", "1", "--threads", "1",
    ).stdout  # fmt: skip
    assert "MFU" in table and "fp32" in table and "x baseline" not in table
    assert "1 torch threads" in table


def test_training_bad_precision(cli_run):
    assert_clean_error(
        cli_run("bench", "training", "--precisions", "fp32,int4"),
        "unknown precision 'int4'",
    )


@pytest.mark.slow
def test_training_compiled(cli_run):
    result = cli_run(
        "bench", "training", "--preset", "tiny", "--precisions", "fp32", "--compile",
        "--no-baseline", "--batch-size", "1", "--context-length", "8",
        "--steps", "1", "--repeats", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["name"], r["compiled"]) for r in rows] == [
        ("fp32", False),
        ("fp32 compiled", True),
    ]


@pytest.mark.parametrize("args", [("bench", "--help"), ("bench", "sampling", "--help")])
def test_help_imports_no_torch(args):
    assert not HEAVY & _modules_after_cli(*args)


def test_help_has_examples(cli_run):
    for command in ("sampling", "training", "compare"):
        result = cli_run("bench", command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output
    assert "bench" in cli_run("--help").output


def test_weights_from_a_transformers_directory(cli_run, prompts, tmp_path):
    from tests.conftest import save_transformers_gpt2

    save_transformers_gpt2(tmp_path / "gpt2", vocab_size=50257, n_positions=64)
    result = cli_run(
        "bench", "sampling", "--weights", f"hf:{tmp_path / 'gpt2'}",
        "--samplers", "greedy,top-k", "--max-new-tokens", "3", "--repeats", "2",
        "--prompts", str(prompts), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["settings"]["model"] == f"hf:{tmp_path / 'gpt2'}"
    assert data["settings"]["config"]["emb_dim"] == 32
    assert [r["name"] for r in data["rows"]] == ["greedy", "top-k"]
    # a trained-looking model: NLL is that of the real distribution (> 0)
    assert all(r["quality"]["nll"] > 0 for r in data["rows"])


def test_sampling_rows_per_thread_count_and_cpu_features(cli_run):
    result = cli_run(
        "bench", "sampling", *TINY, "--samplers", "greedy", "--quantize", "int8",
        "--thread-counts", "1,2", "--repeats", "1", "--warmup", "0", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    names = [r["name"] for r in data["rows"]]
    assert names == ["greedy @1t", "greedy int8 @1t", "greedy @2t", "greedy int8 @2t"]
    assert [r["threads"] for r in data["rows"]] == [1, 1, 2, 2]
    by_name = {r["name"]: r for r in data["rows"]}
    assert "base" in by_name["greedy int8 @2t"]["vs"]
    assert data["settings"]["thread_counts"] == [1, 2]
    feats = data["machine"]["cpu_features"]
    assert set(feats) == {"model", "flags", "torch_capability"}
    bad = cli_run("bench", "sampling", *TINY, "--thread-counts", "one")
    assert bad.exit_code != 0 and "--thread-counts" in bad.stderr


def test_bench_kernels_table_and_json(cli_run):
    result = cli_run(
        "bench", "kernels", "--preset", "tiny", "--formats", "int8",
        "--cold-mib", "0", "--rounds", "1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    from gptkit.plugins.quantizers import native

    backends = {r["backend"] for r in data["rows"] if r["format"] == "int8"}
    assert backends == {*native.available("int8"), "aten", "torch"}
    assert {r["shape"] for r in data["rows"]} >= {"256 x 64", "64 x 256"}
    assert all(r["us"] > 0 and r["bound_share"] > 0 for r in data["rows"])
    assert "flags" in data["machine"]["cpu_features"]
    bad = cli_run("bench", "kernels", "--formats", "int3")
    assert bad.exit_code != 0 and "unknown format" in bad.stderr
