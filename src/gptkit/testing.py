"""pytest fixtures and contract checks for gptkit plugin authors.

Installed as a pytest plugin (entry point ``pytest11``), so a plugin package's
tests can use these fixtures without importing anything. Importing this module
is cheap: torch and the tokenizer are imported only when a fixture or a check
that needs them runs.

Fixtures:

- ``gptkit_registry(*distributions)``: a strict registry holding the built-ins
  plus only the named installed distributions.
- ``gptkit_cli(*args, env=None, input=None)``: run ``gptkit`` in-process, with
  a fresh registry and strict plugins; returns click's ``Result``.
- ``gptkit_tiny_model``: a tiny random :class:`~gptkit.core.model.GPTModel`
  (GPT-2 vocabulary, eval mode).
- ``gptkit_checkpoint``: that model saved as a native checkpoint directory, for
  ``--weights``.
- ``gptkit_tokenizer``: the GPT-2 tokenizer.
- ``gptkit_run_dir``: an empty run directory.

Checks (plain functions; each raises ``AssertionError`` naming the broken rule):
``check_component``, ``check_sampler``, ``check_scheduler``, ``check_logger``,
``check_corpus``, ``check_weight_loader``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "check_component",
    "check_corpus",
    "check_logger",
    "check_sampler",
    "check_scheduler",
    "check_weight_loader",
    "gptkit_checkpoint",
    "gptkit_cli",
    "gptkit_registry",
    "gptkit_run_dir",
    "gptkit_tiny_model",
    "gptkit_tokenizer",
]

# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def gptkit_registry(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Build a strict registry with the built-ins and the given distributions."""
    from gptkit.core.registry import build_registry, normalize_dist, report_errors

    monkeypatch.setenv("GPTKIT_STRICT_PLUGINS", "1")

    def make(*distributions: str) -> Any:
        reg = build_registry(allow={normalize_dist(d) for d in distributions})
        report_errors(reg)
        return reg

    return make


def _fresh_cli() -> Any:
    """A copy of the root ``gptkit`` group that has not asked plugins for their
    commands yet (the real one asks once per process)."""
    import copy

    from gptkit.cli.main import cli

    group = copy.copy(cli)
    group.commands = {}
    group._plugins_loaded = False  # type: ignore[attr-defined]
    return group


@pytest.fixture
def gptkit_cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Run ``gptkit ARGS...`` in-process; returns click's ``Result``
    (``exit_code``, ``output``, ``stdout``, ``stderr``).

    Plugins are strict (``GPTKIT_STRICT_PLUGINS=1``) and the registry is rebuilt
    for every call, so ``env={"GPTKIT_LOAD_PLUGINS": "my-dist"}`` takes effect.
    """
    from click.testing import CliRunner

    from gptkit.core.registry import reset_registry

    monkeypatch.setenv("GPTKIT_STRICT_PLUGINS", "1")

    def run(
        *args: str,
        env: Mapping[str, str | None] | None = None,
        input: str | None = None,
    ) -> Any:
        reset_registry()
        try:
            return CliRunner().invoke(
                _fresh_cli(),
                list(args),
                input=input,
                env=dict(env or {}),
                prog_name="gptkit",
                catch_exceptions=False,
            )
        finally:
            reset_registry()

    return run


@pytest.fixture
def gptkit_tiny_model() -> Any:
    """A tiny random GPT (2 layers, 32 wide, context 32, GPT-2 vocabulary)."""
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.model import GPTModel

    torch.manual_seed(0)
    cfg = GPTConfig(context_length=32, emb_dim=32, n_layers=2, n_heads=2, drop_rate=0.0)
    return GPTModel(cfg).eval()


@pytest.fixture
def gptkit_checkpoint(gptkit_tiny_model: Any, tmp_path: Path) -> Path:
    """``gptkit_tiny_model`` as a native checkpoint directory: pass it to
    ``gptkit generate --weights`` or ``gptkit eval --weights``."""
    from gptkit.core.checkpoints.native import save_checkpoint

    return save_checkpoint(
        tmp_path / "checkpoints", 0, gptkit_tiny_model, gptkit_tiny_model.cfg
    )


@pytest.fixture
def gptkit_tokenizer() -> Any:
    """The GPT-2 tokenizer (a tiktoken ``Encoding``; built offline)."""
    from gptkit.core.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture
def gptkit_run_dir(tmp_path: Path) -> Path:
    """An empty run directory."""
    path = tmp_path / "run"
    path.mkdir()
    return path


# -- contract checks --------------------------------------------------------------


def check_component(cls: type) -> None:
    """A component class has a valid ``name``, a one-line ``summary``, and a
    frozen dataclass ``Options`` whose fields have help text and defaults within
    their bounds (``ge``, ``le``, ``choices``, ...)."""
    from gptkit.core.interfaces import NAME_PATTERN, ComponentBase
    from gptkit.core.options import _check_bounds
    from gptkit.errors import OptionError

    assert isinstance(cls, type) and issubclass(cls, ComponentBase), (
        f"{cls!r} is not a gptkit component class"
    )
    assert isinstance(cls.name, str) and NAME_PATTERN.match(cls.name), (
        f"name {cls.name!r} must be lowercase letters, digits and dashes"
    )
    assert cls.summary and "\n" not in cls.summary, (
        f"{cls.name}: summary must be one non-empty line"
    )
    options = cls.Options
    assert dataclasses.is_dataclass(options), f"{cls.name}: Options is not a dataclass"
    params = getattr(options, "__dataclass_params__", None)
    assert params is not None and params.frozen, f"{cls.name}: Options is not frozen"
    for f in dataclasses.fields(options):
        assert f.metadata.get("help"), f"{cls.name}: option {f.name} has no help text"
    for f in dataclasses.fields(options):  # defaults respect their own bounds
        if f.default is not dataclasses.MISSING:
            try:
                _check_bounds(f.default, f.metadata, f.name, cls.describe())
            except OptionError as exc:
                raise AssertionError(f"default of {exc}") from None


def check_sampler(
    sampler: Any, vocab_size: int = 50257, batch: int = 3, steps: int = 3
) -> None:
    """A per-token sampler keeps the engine's contract.

    The engine calls ``start(batch)``, then ``sample(logits, generator)`` with
    float32 logits (B, V) once per step. Checked: one ``long`` id per row, in
    range; ``process`` keeps the shape and leaves its input alone; a token at
    ``-inf`` is never chosen; the same seed gives the same ids; a
    ``deterministic`` sampler ignores the generator.
    """
    import torch

    from gptkit.core.interfaces import Sampler

    assert isinstance(sampler, Sampler), f"{sampler!r} is not a Sampler"
    check_component(type(sampler))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, vocab_size, generator=g)
    # Row r allows only ids of r's parity (so no fixed id is allowed in every
    # row), minus a random third of those; id r % 2 always stays possible.
    parity = (torch.arange(vocab_size)[None, :] + torch.arange(batch)[:, None]) % 2
    banned = (parity == 1) | (torch.rand(batch, vocab_size, generator=g) < 0.3)
    banned[torch.arange(batch), torch.arange(batch) % 2] = False
    masked = logits.masked_fill(banned, float("-inf"))

    given = logits.clone()
    assert tuple(sampler.process(given).shape) == (batch, vocab_size), (
        "process() must return logits of the input's shape (B, V)"
    )
    assert torch.equal(given, logits), "process() must not modify its input"

    def run(seed: int) -> list[list[int]]:
        sampler.start(batch)
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for _ in range(steps):
            ids = sampler.sample(masked.clone(), gen)
            assert isinstance(ids, torch.Tensor) and ids.dtype == torch.long, (
                "sample() must return a long tensor"
            )
            assert tuple(ids.shape) == (batch,), (
                f"sample() returned shape {tuple(ids.shape)}, expected ({batch},)"
            )
            assert bool(((ids >= 0) & (ids < vocab_size)).all()), "id out of range"
            chosen = banned.gather(1, ids[:, None]).squeeze(1)
            assert not bool(chosen.any()), "sample() chose a token whose logit is -inf"
            rows.append(ids.tolist())
        return rows

    first = run(1)
    assert first == run(1), "the same generator seed must give the same ids"
    if sampler.deterministic:
        assert first == run(2), "a deterministic sampler must not depend on the seed"


def check_scheduler(
    scheduler: Any, total_steps: int = 100, base_lr: float = 1e-3
) -> None:
    """A scheduler gives a finite, non-negative rate at every step, repeatably
    (it is a pure function of the step: resuming a run relies on that)."""
    from gptkit.core.interfaces import Scheduler

    assert isinstance(scheduler, Scheduler), f"{scheduler!r} is not a Scheduler"
    check_component(type(scheduler))
    lrs = [scheduler.lr_at(s, total_steps, base_lr) for s in range(total_steps)]
    assert all(isinstance(lr, float | int) for lr in lrs), "lr_at() must return a float"
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs), (
        "lr_at() must be finite and >= 0"
    )
    backwards = [
        scheduler.lr_at(s, total_steps, base_lr) for s in reversed(range(total_steps))
    ]
    assert lrs == backwards[::-1], "lr_at() must depend only on its arguments"


def _fake_run(
    logger: Any, run_dir: Path | None, steps: int, start_step: int, eval_freq: int
) -> None:
    """Drive ``logger`` like the trainer does, for steps start_step..steps-1."""
    from gptkit.core.interfaces import RunInfo

    steps_per_epoch = max(1, steps // 2)
    config = {
        "preset": "tiny",
        "model": {"n_layers": 2, "emb_dim": 32, "n_heads": 2, "context_length": 32},
        "data": {"corpus": ["fake"], "characters": 4000, "tokens": 1000},
    }
    info = RunInfo(
        run_dir=run_dir,
        config=config,
        total_steps=steps,
        steps_per_epoch=steps_per_epoch,
        epochs=2,
        num_parameters=123_456,
        train_tokens=900,
        val_tokens=100,
        start_step=start_step,
    )
    logger.start(info)
    tokens = 64 * start_step
    for step in range(start_step, steps):
        epoch = step // steps_per_epoch + 1
        tokens += 64
        loss = 10.0 / (step + 1)
        logger.log_step(
            {
                "step": step,
                "epoch": epoch,
                "tokens_seen": tokens,
                "lr": 1e-3,
                "loss": loss,
            }
        )
        if step % eval_freq == 0:
            logger.log_eval(
                {
                    "step": step,
                    "epoch": epoch,
                    "tokens_seen": tokens,
                    "train_loss": loss,
                    "val_loss": loss + 0.5,
                }
            )
        if (step + 1) % steps_per_epoch == 0:
            logger.log_sample(
                {
                    "epoch": epoch,
                    "step": step,
                    "tokens_seen": tokens,
                    "prompt": "Every effort",
                    "text": f"Every effort moves you (epoch {epoch})",
                }
            )
    logger.message(f"saved checkpoint step-{steps:06d}")
    logger.finish(
        {
            "status": "completed",
            "steps": steps,
            "epochs": 2,
            "tokens_seen": tokens,
            "seconds": 1.0,
            "checkpoint": None,
            "train_loss": 1.0,
            "val_loss": 1.5,
        }
    )


def check_logger(
    logger: Any, run_dir: Path | None = None, steps: int = 6, eval_freq: int = 2
) -> list[Path]:
    """Drive a logger through a short fake run, then a resumed one, like the
    trainer does; return the files it wrote under ``run_dir``, sorted.

    The same instance is started three times, so ``start()`` must (re)initialise
    all state: a run without a run directory (it must write nothing, not even in
    the working directory), a run in ``run_dir`` (when given), and that run
    resumed at step ``steps // 2`` (rows from there on are logged again).
    """
    from gptkit.core.interfaces import Logger

    assert isinstance(logger, Logger), f"{logger!r} is not a Logger"
    check_component(type(logger))
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            _fake_run(logger, None, steps, 0, eval_freq)
        finally:
            os.chdir(previous)
        left = sorted(os.listdir(scratch))
        assert not left, f"without a run directory the logger wrote {left}"
    if run_dir is None:
        return []
    run_dir = Path(run_dir)
    _fake_run(logger, run_dir, steps, 0, eval_freq)
    _fake_run(logger, run_dir, steps, steps // 2, eval_freq)
    return sorted(p for p in run_dir.rglob("*") if p.is_file())


def check_corpus(corpus: Any) -> list[str]:
    """A corpus yields at least one non-blank string document, the same ones
    each time; returns the documents."""
    from gptkit.core.interfaces import Corpus

    assert isinstance(corpus, Corpus), f"{corpus!r} is not a Corpus"
    check_component(type(corpus))
    docs = list(corpus.documents())
    assert docs, "documents() yielded nothing"
    assert all(isinstance(d, str) for d in docs), "documents must be str"
    assert any(d.strip() for d in docs), "every document is blank"
    assert docs == list(corpus.documents()), "documents() must be repeatable"
    assert isinstance(corpus.sample_prompt, str), "sample_prompt must be a str"
    return docs


def check_weight_loader(loader: Any, location: str) -> Any:
    """``loader.load(location)`` returns :class:`LoadedWeights` whose state dict
    fits ``GPTModel(config)`` exactly (names and shapes; a tied output head may
    be left out), with tensors on the CPU; returns the ``LoadedWeights``."""
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.interfaces import LoadedWeights, WeightLoader
    from gptkit.core.model import GPTModel

    assert isinstance(loader, WeightLoader), f"{loader!r} is not a WeightLoader"
    check_component(type(loader))
    loaded = loader.load(location)
    assert isinstance(loaded, LoadedWeights), "load() must return LoadedWeights"
    assert isinstance(loaded.config, GPTConfig), "LoadedWeights.config: GPTConfig"
    with torch.device("meta"):  # shapes only, no memory
        reference = GPTModel(loaded.config).state_dict()
    state = loaded.state_dict
    missing = set(reference) - set(state) - set(loaded.config.tied_keys())
    assert not missing, f"missing tensors: {sorted(missing)[:5]}"
    unexpected = set(state) - set(reference)
    assert not unexpected, f"unexpected tensors: {sorted(unexpected)[:5]}"
    for key, tensor in state.items():
        assert tuple(tensor.shape) == tuple(reference[key].shape), (
            f"{key}: shape {tuple(tensor.shape)}, expected"
            f" {tuple(reference[key].shape)}"
        )
        assert tensor.device.type == "cpu", f"{key} is not on the CPU"
    return loaded
