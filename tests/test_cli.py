"""The command line as a user meets it: help, the book's numbers, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import assert_clean_error

HEAVY = {"torch", "tiktoken", "huggingface_hub"}


def _modules_after_cli(*args: str) -> set[str]:
    code = (
        "import sys\n"
        "from gptkit.cli.main import cli\n"
        "try:\n"
        f"    cli.main({list(args)!r}, prog_name='gptkit')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = [x for x in proc.stderr.splitlines() if x.startswith("MODULES")][-1]
    return set(line.split()[1:])


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("plugins", "--all", "--json"),
        ("train", "--help"),
        ("generate", "--help"),
    ],
)
def test_help_and_plugin_listing_import_no_torch(args):
    assert not HEAVY & _modules_after_cli(*args)


@pytest.mark.parametrize("command", ["train", "eval", "generate", "plugins"])
def test_every_command_has_help_with_examples(cli_run, command):
    result = cli_run(command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_console_script_and_module_entry_points():
    out = subprocess.run(
        [sys.executable, "-m", "gptkit", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "gptkit" in out.stdout


def test_plugins_json_lists_builtins(cli_run):
    result = cli_run("plugins", "--all", "--json")
    data = json.loads(result.output)
    provides: dict[str, list[str]] = {}
    for plugin in data["plugins"]:  # installed plugins may add to the same kinds
        for kind, names in plugin["provides"].items():
            provides.setdefault(kind, []).extend(names)
    assert "greedy" in provides["samplers"] and "python-docs" in provides["corpora"]
    assert data["errors"] == []
    listed = json.loads(cli_run("plugins", "--json").output)["plugins"]
    assert not any(p["builtin"] for p in listed)  # built-ins only with --all


@pytest.mark.slow
def test_eval_reproduces_the_books_initial_losses(cli_run, verdict_path):
    result = cli_run(
        "eval",
        "--preset",
        "gpt2-124m",
        "--context-length",
        "256",
        "--corpus",
        str(verdict_path),
        "--seed",
        "123",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.output)
    assert data["train_tokens"] == 4608 and data["val_tokens"] == 512
    assert data["train_loss"] == pytest.approx(10.98758, abs=5e-5)
    assert data["val_loss"] == pytest.approx(10.98110, abs=5e-5)
    assert data["train_perplexity"] == pytest.approx(
        2.718281828 ** data["train_loss"], rel=1e-6
    )


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("Only a few words here.")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 100)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["train", "--corpus", "{tmp}/missing.txt"],
            ["corpus file not found", "missing.txt"],
        ),
        (["train", "--corpus", "{tmp}/empty.txt"], ["empty"]),
        (
            ["train", "--corpus", "{tmp}/short.txt", "--preset", "tiny"],
            ["corpus too short"],
        ),
        (["train", "--corpus", "{tmp}/latin1.txt"], ["not UTF-8"]),
        (["train", "--preset", "huge"], ["--preset", "huge"]),
        (
            ["train", "--corpus", "no-such-corpus-name"],
            ["unknown corpus", "python-docs, the-verdict"],
        ),
        (["train", "--logger", "nope"], ["unknown logger 'nope'", "console"]),
        (["train", "--scheduler", "nope"], ["unknown scheduler 'nope'"]),
        (["train", "--lr", "-0.001"], ["'--lr'", "x>0.0"]),
        (["train", "--epochs", "0"], ["--epochs"]),
        (
            ["train", "-s", "warmup=2", "--scheduler", "warmup-cosine"],
            ["warmup", "<= 1.0"],
        ),
        (["eval", "--corpus", "{tmp}/empty.txt"], ["empty"]),
        (["generate", "--weights", "{tmp}/nothing", "hi"], ["weights not found"]),
        (
            ["generate", "--weights", "{tmp}", "--sampler", "nope", "hi"],
            ["unknown sampler"],
        ),
        (
            ["generate", "--weights", "{tmp}", "-o", "temperature=-1", "hi"],
            ["temperature"],
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(cli_run, bad_files, args, fragments):
    args = [a.replace("{tmp}", str(bad_files)) for a in args]
    assert_clean_error(cli_run(*args), *fragments)
