"""pytest fixtures and contract checks for gptkit plugin authors.

Installed as a pytest plugin (entry point ``pytest11``), so a plugin package's
tests can use these fixtures without importing anything. Nothing heavy is
imported until a fixture is used.

- ``gptkit_registry(*distributions)``: a strict registry holding the built-ins
  plus only the named installed distributions.
- ``gptkit_tiny_model``: a tiny random :class:`~gptkit.core.model.GPTModel` (eval mode).
- ``gptkit_tokenizer``: the GPT-2 tokenizer.
- ``gptkit_run_dir``: an empty run directory.
- ``check_sampler`` / ``check_scheduler``: assert a component keeps its contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


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


@pytest.fixture
def gptkit_tiny_model() -> Any:
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.model import GPTModel

    torch.manual_seed(0)
    cfg = GPTConfig(context_length=32, emb_dim=32, n_layers=2, n_heads=2, drop_rate=0.0)
    return GPTModel(cfg).eval()


@pytest.fixture
def gptkit_tokenizer() -> Any:
    from gptkit.core.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture
def gptkit_run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def check_sampler(sampler: Any, vocab_size: int = 50257, batch: int = 3) -> None:
    """A token sampler returns one valid id per row, as a long tensor."""
    import torch

    from gptkit.core.interfaces import Sampler

    assert isinstance(sampler, Sampler), f"{sampler!r} is not a Sampler"
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, vocab_size, generator=g)
    ids = sampler.sample(logits, g)
    assert ids.shape == (batch,), f"sample() returned shape {tuple(ids.shape)}"
    assert ids.dtype == torch.long
    assert bool(((ids >= 0) & (ids < vocab_size)).all())


def check_scheduler(
    scheduler: Any, total_steps: int = 100, base_lr: float = 1e-3
) -> None:
    """A scheduler gives a finite, non-negative rate at every step, repeatably."""
    import math

    lrs = [scheduler.lr_at(s, total_steps, base_lr) for s in range(total_steps)]
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs)
    assert lrs == [scheduler.lr_at(s, total_steps, base_lr) for s in range(total_steps)]
