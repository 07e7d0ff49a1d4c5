"""Third-party plugins installed with pip, as users meet them.

- The example package (``examples/gptkit-example-plugin``, installed by the
  README's test command) works in every command without any change to gptkit:
  it is listed, its sampler generates, its scheduler, logger and corpus train,
  its command runs, and ``gptkit --help`` still imports no torch.
- A package that raises on import (``tests/plugins/gptkit-broken-plugin``)
  never breaks gptkit; strict mode makes it a one-line fatal error;
  ``GPTKIT_LOAD_PLUGINS`` keeps it from being imported at all.
- Two packages registering the same sampler name: the first by entry-point name
  wins and the conflict names both distributions.

The two test packages are really pip-installed (dist-info, entry points), each
into its own temporary ``--target`` directory put on ``PYTHONPATH`` of a
``gptkit`` subprocess, never into the environment running the tests (which is
strict: an installed broken plugin would fail every test).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import REPO

pytestmark = pytest.mark.installed_plugin

EXAMPLE = "gptkit-example-plugin"
HEAVY = {"torch", "tiktoken", "huggingface_hub"}


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_example = pytest.mark.skipif(
    not _installed(EXAMPLE),
    reason=f"{EXAMPLE} is not installed (pip install -e examples/{EXAMPLE})",
)


def _pip_install_target(package: Path, target: Path, scratch: Path) -> Path:
    """``pip install --target`` a copy of ``package`` (no network, no build
    isolation, so the source tree stays clean); returns ``target``."""
    if shutil.which("pip", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("pip is not available in this environment")
    pytest.importorskip("setuptools", reason="building the test plugins needs it")
    source = scratch / package.name
    shutil.copytree(package, source)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--no-index", "--disable-pip-version-check"),
            *("--target", str(target), str(source)),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [entry_points] = target.glob("*.dist-info/entry_points.txt")
    assert "[gptkit]" in entry_points.read_text(encoding="utf-8")
    return target


@pytest.fixture(scope="session")
def broken_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("broken-plugin")
    return _pip_install_target(
        REPO / "tests" / "plugins" / "gptkit-broken-plugin", base / "site", base
    )


@pytest.fixture(scope="session")
def dup_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dup-plugin")
    return _pip_install_target(
        REPO / "tests" / "plugins" / "gptkit-dup-plugin", base / "site", base
    )


def gptkit(
    *args: str, target: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run ``python -m gptkit ARGS`` with ``target`` on PYTHONPATH; plugin
    settings come only from ``env`` (not strict unless asked)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GPTKIT_STRICT_PLUGINS", "GPTKIT_LOAD_PLUGINS", "PYTHONPATH")
    }
    if target is not None:
        environ["PYTHONPATH"] = str(target)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "gptkit", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model as a native checkpoint (for --weights)."""
    import torch

    from gptkit.core.checkpoints.native import save_checkpoint
    from gptkit.core.config import GPTConfig
    from gptkit.core.model import GPTModel

    torch.manual_seed(0)
    cfg = GPTConfig(context_length=32, emb_dim=32, n_layers=2, n_heads=2, drop_rate=0)
    model = GPTModel(cfg).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), 0, model, cfg)


# -- the example package -----------------------------------------------------------


@needs_example
def test_example_components_are_listed(cli_run):
    data = json.loads(cli_run("plugins", "--json").output)
    [plugin] = [p for p in data["plugins"] if p["distribution"] == EXAMPLE]
    assert plugin["name"] == "example"
    assert plugin["version"] == metadata.version(EXAMPLE)
    assert plugin["builtin"] is False
    assert plugin["hooks"] == [
        "register_commands",
        "register_corpora",
        "register_loggers",
        "register_samplers",
        "register_schedulers",
    ]
    assert plugin["provides"] == {
        "samplers": ["locally-typical"],
        "schedulers": ["inverse-sqrt"],
        "loggers": ["markdown"],
        "corpora": ["us-documents"],
        "commands": ["corpus-stats"],
    }
    assert all(c["summary"] for c in plugin["components"])
    assert data["errors"] == []
    table = cli_run("plugins").output
    assert f"example: {EXAMPLE} " in table
    assert "  command    corpus-stats     Count the documents" in table


@needs_example
def test_example_sampler_generates(cli_run, tiny_checkpoint):
    args = ["generate", "--weights", str(tiny_checkpoint), "--sampler"]
    args += ["locally-typical", "-o", "mass=0.3", "--seed", "3", "--json"]
    args += ["--max-new-tokens", "5", "One", "Two words"]
    result = cli_run(*args)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.output)
    assert data["sampler"] == "locally-typical"
    assert [len(r["token_ids"]) for r in data["results"]] == [5, 5]
    assert json.loads(cli_run(*args).output) == data  # seeded: reproducible


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gptkit train`` with the example's corpus, scheduler and logger (and
    gptkit's csv and jsonl loggers), 3 steps of the tiny preset."""
    if not _installed(EXAMPLE):
        pytest.skip(f"{EXAMPLE} is not installed")
    from gptkit.cli.main import cli
    from gptkit.core.registry import reset_registry

    run_dir = tmp_path_factory.mktemp("example-run") / "run"
    args = ["train", "--preset", "tiny", "--max-steps", "3", "--batch-size", "2"]
    args += ["--corpus", "us-documents", "--scheduler", "inverse-sqrt"]
    args += ["-s", "warmup_steps=2", "--lr", "1e-3", "--eval-freq", "1"]
    args += ["--eval-iter", "1", "--max-new-tokens", "4", "--json"]
    args += ["--logger", "markdown", "--logger", "csv", "--logger", "jsonl"]
    args += ["--out", str(run_dir)]
    reset_registry()
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    reset_registry()
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.output)["steps"] == 3
    return run_dir


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_example
def test_example_corpus_is_what_trains(example_run):
    from gptkit.core.registry import get_registry

    config = json.loads((example_run / "config.json").read_text())
    docs = list(get_registry().corpora.create("us-documents").documents())
    assert config["data"]["corpus"] == ["us-documents"]
    # The documents joined with <|endoftext|>, as for every corpus.
    assert config["data"]["characters"] == sum(map(len, docs)) + 13 * (len(docs) - 1)


@needs_example
def test_example_scheduler_sets_the_learning_rate(example_run):
    steps = [r for r in _jsonl(example_run / "metrics.jsonl") if "lr" in r]
    # lr(n) = 1e-3 * min(n / 2, sqrt(2 / n)) for steps n = 1, 2, 3
    expected = [1e-3 * min(n / 2, math.sqrt(2 / n)) for n in (1, 2, 3)]
    assert [r["lr"] for r in steps] == pytest.approx(expected)
    config = json.loads((example_run / "config.json").read_text())
    assert config["scheduler"] == {
        "name": "inverse-sqrt",
        "options": {
            "warmup_steps": 2,
            "min_lr": 0.0,
        },
    }


@needs_example
def test_example_logger_writes_its_report(example_run):
    report = (example_run / "report.md").read_text(encoding="utf-8")
    evals = [r for r in _jsonl(example_run / "metrics.jsonl") if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 1, 2]
    for r in evals:
        assert f"| {r['step']} | 1 | {r['tokens_seen']:,} | {r['train_loss']:.4f}" in (
            report
        )
    assert "- status: completed after 3 steps" in report
    assert "### Epoch 1, step 2" in report


@needs_example
def test_csv_logger_matches_the_jsonl_rows(example_run):
    import csv

    with open(example_run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    jsonl = _jsonl(example_run / "metrics.jsonl")
    steps = [r for r in jsonl if "lr" in r]
    evals = {r["step"]: r for r in jsonl if "val_loss" in r}
    assert [int(r["step"]) for r in rows] == [r["step"] for r in steps]
    for row, step in zip(rows, steps, strict=True):
        assert float(row["loss"]) == step["loss"] and float(row["lr"]) == step["lr"]
        assert float(row["val_loss"]) == evals[step["step"]]["val_loss"]


@needs_example
def test_example_command_runs(cli_run):
    result = cli_run("corpus-stats", "us-documents", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.output)
    assert row["corpus"] == "us-documents" and row["documents"] == 3
    assert row["tokens"] > 2000


def _modules_after(*args: str, **env: str) -> tuple[set[str], str]:
    code = (
        "import sys\n"
        "from gptkit.cli.main import cli\n"
        "try:\n"
        f"    cli.main({list(args)!r}, prog_name='gptkit')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sys.modules), file=sys.stderr)\n"
    )
    environ = {**os.environ, **env}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("MODULES")][-1]
    return set(line.split()[1:]), proc.stdout


@needs_example
def test_help_stays_torch_free_with_the_example_installed():
    modules, output = _modules_after("--help")
    assert "corpus-stats" in output  # the plugin's hooks did run
    assert "gptkit_example" in modules
    assert not HEAVY & modules


# -- a plugin that raises on import ---------------------------------------------


def test_broken_plugin_does_not_break_help(broken_target):
    proc = gptkit("--help", target=broken_target)
    assert proc.returncode == 0, proc.stderr
    assert "generate" in proc.stdout and "plugins" in proc.stdout
    [line] = proc.stderr.splitlines()  # reported once, one line
    assert line.startswith("gptkit: plugin broken (gptkit-broken-plugin): failed to")
    assert "RuntimeError: gptkit-broken-plugin fails on import" in line


def test_broken_plugin_is_listed_with_its_error(broken_target):
    proc = gptkit("plugins", "--json", target=broken_target)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    [error] = [e for e in data["errors"] if e["plugin"] == "broken"]
    assert error["distribution"] == "gptkit-broken-plugin"
    assert error["error"].startswith("failed to load: RuntimeError: gptkit-broken")
    assert "broken" not in [p["name"] for p in data["plugins"]]
    table = gptkit("plugins", target=broken_target).stdout
    assert "errors:\n  broken (gptkit-broken-plugin): failed to load:" in table


def test_broken_plugin_does_not_break_generate(broken_target, tiny_checkpoint):
    args = ["generate", "--weights", str(tiny_checkpoint), "--max-new-tokens", "3"]
    proc = gptkit(*args, "--json", "Hello", target=broken_target)
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)["results"]
    assert len(result["token_ids"]) == 3
    assert "gptkit-broken-plugin" in proc.stderr


@pytest.mark.parametrize("command", ["plugins", "generate"])
def test_strict_mode_makes_the_broken_plugin_fatal(
    broken_target, tiny_checkpoint, command
):
    args = ["plugins"]
    if command == "generate":
        args = ["generate", "--weights", str(tiny_checkpoint), "Hello"]
    proc = gptkit(*args, target=broken_target, GPTKIT_STRICT_PLUGINS="1")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("gptkit: error: plugin broken (gptkit-broken-plugin)")
    assert line.endswith("(GPTKIT_STRICT_PLUGINS is set)")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("allow", ["", "gptkit-example-plugin", "some-other-plugin"])
def test_load_plugins_allowlist_skips_the_broken_plugin(broken_target, tmp_path, allow):
    marker = tmp_path / "imported"
    proc = gptkit(
        "plugins",
        "--json",
        target=broken_target,
        GPTKIT_STRICT_PLUGINS="1",
        GPTKIT_LOAD_PLUGINS=allow,
        GPTKIT_BROKEN_MARKER=str(marker),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["errors"] == []
    assert not marker.exists()  # not even imported
    # Without the allowlist the same environment does import it.
    gptkit("plugins", target=broken_target, GPTKIT_BROKEN_MARKER=str(marker))
    assert marker.exists()


# -- two plugins, one sampler name ------------------------------------------------


@needs_example
def test_duplicate_sampler_name_first_entry_point_wins(dup_target, tiny_checkpoint):
    # PYTHONPATH comes first on sys.path, so the dup package is *discovered*
    # first; its entry point "typical-dup" sorts after "example", so the
    # example's sampler must win all the same.
    proc = gptkit("plugins", "--json", target=dup_target)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    provides = {p["distribution"]: p["provides"] for p in data["plugins"]}
    assert provides[EXAMPLE]["samplers"] == ["locally-typical"]
    assert provides["gptkit-dup-plugin"] == {"samplers": ["dup-argmax"]}
    [error] = data["errors"]
    assert error["distribution"] == "gptkit-dup-plugin"
    assert error["error"] == (
        "sampler name 'locally-typical' is already registered by plugin example"
        f" ({EXAMPLE}); keeping the first"
    )
    [line] = proc.stderr.splitlines()
    assert "gptkit-dup-plugin" in line and EXAMPLE in line

    strict = gptkit("plugins", target=dup_target, GPTKIT_STRICT_PLUGINS="1")
    assert strict.returncode == 2
    [line] = strict.stderr.splitlines()
    assert line.startswith("gptkit: error: plugin typical-dup (gptkit-dup-plugin):")
    assert f"plugin example ({EXAMPLE})" in line


@needs_example
def test_trace_plugins_shows_the_example_hook_calls():
    proc = gptkit("plugins", GPTKIT_TRACE_PLUGINS="1")
    assert proc.returncode == 0, proc.stderr
    for hook in ("register_samplers", "register_schedulers", "register_corpora"):
        assert f"gptkit: calling example.{hook}()" in proc.stderr
    assert "example: gptkit-example-plugin" in proc.stdout
