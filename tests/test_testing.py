"""``gptkit.testing``, the pytest plugin for plugin authors: its fixtures work,
its checks pass gptkit's own components and catch broken ones, and importing it
stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from gptkit.core.interfaces import Corpus, Logger, Sampler, Scheduler
from gptkit.core.registry import build_registry
from gptkit.testing import (
    check_component,
    check_corpus,
    check_logger,
    check_sampler,
    check_scheduler,
    check_weight_loader,
)

BUILTINS = build_registry(entry_points=False)


def test_importing_the_testing_plugin_imports_no_torch():
    code = "import sys, gptkit.testing; print(sorted({'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in BUILTINS.samplers.names()
        if issubclass(BUILTINS.samplers.get(n), Sampler)
    ],
)
def test_check_sampler_passes_builtin_samplers(name):
    check_sampler(BUILTINS.samplers.create(name))


@pytest.mark.parametrize("name", BUILTINS.schedulers.names())
def test_check_scheduler_passes_builtin_schedulers(name):
    check_scheduler(BUILTINS.schedulers.create(name))


@pytest.mark.parametrize("name", ["jsonl", "csv"])
def test_check_logger_passes_builtin_loggers(name, gptkit_run_dir):
    files = check_logger(BUILTINS.loggers.create(name), gptkit_run_dir)
    assert files, f"logger {name} wrote nothing"


def test_check_corpus_passes_a_builtin_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("some text", encoding="utf-8")
    corpus = BUILTINS.corpora.create("files", paths=(str(tmp_path),))
    assert check_corpus(corpus) == ["some text"]


def test_check_weight_loader_passes_the_native_loader(gptkit_checkpoint):
    loaded = check_weight_loader(
        BUILTINS.loaders.create("native"), str(gptkit_checkpoint)
    )
    assert loaded.config.emb_dim == 32


# -- the checks catch broken components ------------------------------------------


class IgnoresMask(Sampler):
    """Picks token 1 whatever its logit."""

    name = "ignores-mask"
    summary = "broken"

    def sample(self, logits, generator=None):
        return torch.ones(logits.shape[0], dtype=torch.long)


class Unseeded(Sampler):
    """Draws from the global RNG instead of the generator it is given."""

    name = "unseeded"
    summary = "broken"

    def sample(self, logits, generator=None):
        probs = torch.softmax(self.process(logits), dim=-1)
        return torch.multinomial(probs, 1).squeeze(-1)


class WrongShape(Sampler):
    name = "wrong-shape"
    summary = "broken"
    deterministic = True

    def process(self, logits):
        return logits[:, :10]


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        (IgnoresMask(), "-inf"),
        (Unseeded(), "same generator seed"),
        (WrongShape(), "shape"),
    ],
)
def test_check_sampler_catches_broken_samplers(sampler, message):
    with pytest.raises(AssertionError, match=message):
        check_sampler(sampler, vocab_size=64)


class Negative(Scheduler):
    name = "negative"
    summary = "broken"

    def lr_at(self, step, total_steps, base_lr):
        return -base_lr


def test_check_scheduler_catches_a_negative_rate():
    with pytest.raises(AssertionError, match=">= 0"):
        check_scheduler(Negative())


class WritesToCwd(Logger):
    name = "writes-to-cwd"
    summary = "broken"

    def start(self, run):
        Path(run.run_dir or ".", "log.txt").write_text("x")


def test_check_logger_catches_writing_without_a_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError, match=r"without a run directory .*log.txt"):
        check_logger(WritesToCwd())
    assert list(tmp_path.iterdir()) == []  # the check ran in a scratch directory


class Empty(Corpus):
    name = "empty"
    summary = "broken"

    def documents(self):
        yield "  "


def test_check_corpus_catches_a_blank_corpus():
    with pytest.raises(AssertionError, match="blank"):
        check_corpus(Empty())


class NoHelp(Sampler):
    name = "no-help"
    summary = "An option without help text."

    @dataclass(frozen=True)
    class Options:
        k: int = field(default=1)


class BadName(Sampler):
    name = "Bad_Name"
    summary = "x"


class BadDefault(Sampler):
    name = "bad-default"
    summary = "A default outside its own bounds."

    @dataclass(frozen=True)
    class Options:
        k: int = field(default=0, metadata={"help": "k", "ge": 1})


@pytest.mark.parametrize(
    ("cls", "message"),
    [(NoHelp, "no help text"), (BadName, "lowercase"), (BadDefault, "must be >= 1")],
)
def test_check_component_catches_bad_declarations(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_component(cls)


# -- fixtures ---------------------------------------------------------------------


def test_gptkit_registry_is_strict_and_limited_to_the_named_distributions(
    gptkit_registry,
):
    reg = gptkit_registry()
    assert all(info.builtin for info in reg.plugins)
    assert "greedy" in reg.samplers


def test_gptkit_cli_runs_commands_with_fresh_plugins(gptkit_cli, gptkit_checkpoint):
    result = gptkit_cli(
        "generate", "--weights", str(gptkit_checkpoint), "--max-new-tokens", "2",
        "--json", "Hi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"][0]["token_ids"]) == 2
    listing = gptkit_cli("plugins", "--json", env={"GPTKIT_LOAD_PLUGINS": ""})
    assert json.loads(listing.stdout) == {"plugins": [], "errors": []}


def test_gptkit_tiny_model_and_tokenizer(gptkit_tiny_model, gptkit_tokenizer):
    ids = torch.tensor([gptkit_tokenizer.encode("Hello world")])
    logits = gptkit_tiny_model(ids)
    assert logits.shape == (1, 2, gptkit_tokenizer.n_vocab)
    assert not gptkit_tiny_model.training
