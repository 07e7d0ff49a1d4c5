"""Built-in samplers: processed logits equal transformers' warpers, draws follow
the processed distribution, options are validated, penalties match
transformers' processors."""

from __future__ import annotations

import pytest
import torch

from gptkit.core.penalties import Penalties
from gptkit.core.registry import get_registry
from gptkit.errors import OptionError
from gptkit.plugins.samplers.token import Greedy, MinP, TopK, TopP

transformers = pytest.importorskip("transformers")
from transformers.generation.logits_process import (  # noqa: E402
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def random_logits(rows: int = 4, vocab: int = 1000, seed: int = 0) -> torch.Tensor:
    """Logits without near-ties: a random permutation of well-spaced values."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(-6.0, 6.0, vocab)
    return torch.stack([base[torch.randperm(vocab, generator=g)] for _ in range(rows)])


def reference(logits: torch.Tensor, *warpers) -> torch.Tensor:
    ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)
    for warper in warpers:
        logits = warper(ids, logits.clone())
    return logits


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    finite = torch.isfinite(a)
    return bool((finite == torch.isfinite(b)).all()) and bool(
        torch.allclose(a[finite], b[finite], atol=1e-5)
    )


@pytest.mark.parametrize("in_c", [True, False])
@pytest.mark.parametrize("scale", [0.3, 2.0, 6.0])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_top_p_on_a_gpt2_vocabulary_equals_transformers(monkeypatch, scale, p, in_c):
    """50,257 tokens give transformers' result: in C without any sort; else a
    peaked distribution's nucleus is found among the most likely tokens (no
    full sort), a flat one's by sorting them all."""
    import numpy as np

    from gptkit.plugins.samplers import warpers
    from gptkit.system import sampling

    if in_c and sampling.library() is None:
        pytest.skip("no C compiler")
    if not in_c:
        monkeypatch.setattr(warpers, "nucleus_threshold", lambda *a, **k: None)
    logits = torch.randn(3, 50257, generator=torch.Generator().manual_seed(7)) * scale
    sorted_all = []
    real_sort = np.sort
    monkeypatch.setattr(
        np, "sort", lambda *a, **k: sorted_all.append(1) or real_sort(*a, **k)
    )
    ours = warpers.top_p(logits, p)
    assert same(ours, reference(logits, TopPLogitsWarper(p)))
    probs = logits.softmax(-1)
    prefix_holds = probs.topk(warpers.NUCLEUS_PREFIX).values.sum(-1).min() > p + 1e-3
    assert bool(sorted_all) == (not in_c and not bool(prefix_holds))


@pytest.mark.parametrize(("t", "k"), [(1.0, 50), (0.7, 5), (1.3, 1), (2.0, None)])
def test_top_k_equals_transformers(t, k):
    logits = random_logits()
    ours = TopK(temperature=t, top_k=k).process(logits)
    warpers = [TemperatureLogitsWarper(t)] + ([TopKLogitsWarper(k)] if k else [])
    assert same(ours, reference(logits, *warpers))


@pytest.mark.parametrize(
    ("p", "t", "k"), [(0.9, 0.8, None), (0.5, 1.0, None), (0.95, 1.2, 20)]
)
def test_top_p_equals_transformers(p, t, k):
    logits = random_logits()
    ours = TopP(top_p=p, temperature=t, top_k=k).process(logits)
    warpers = [TemperatureLogitsWarper(t)]
    warpers += [TopKLogitsWarper(k)] if k else []
    warpers += [TopPLogitsWarper(p)]
    assert same(ours, reference(logits, *warpers))


@pytest.mark.parametrize(("m", "t"), [(0.1, 1.0), (0.05, 0.7), (0.3, 1.5)])
def test_min_p_equals_transformers(m, t):
    logits = random_logits()
    ours = MinP(min_p=m, temperature=t).process(logits)
    assert same(
        ours, reference(logits, TemperatureLogitsWarper(t), MinPLogitsWarper(m))
    )


@pytest.mark.parametrize(
    "sampler",
    [TopK(temperature=0.9, top_k=6), TopP(top_p=0.8, temperature=1.1), MinP(min_p=0.2)],
    ids=["top-k", "top-p", "min-p"],
)
def test_draws_follow_the_processed_distribution(sampler):
    """Pearson's chi-square over 20,000 draws on an 8-token vocabulary."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.6, 0.2, -0.3, -1.0, -2.0]])
    probs = torch.softmax(sampler.process(logits), -1)[0]
    draws = 20_000
    g = torch.Generator().manual_seed(1234)
    ids = sampler.sample(logits.expand(draws, -1).contiguous(), g)
    counts = torch.bincount(ids, minlength=8).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0  # filtered tokens are never drawn
    expected = probs[kept].double() * draws
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    dof = int(kept.sum()) - 1
    # 99.9% quantiles of chi-square for 1..7 degrees of freedom
    critical = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32][dof - 1]
    assert chi2 < critical, (chi2, dof)


def test_temperature_zero_means_greedy():
    logits = random_logits()
    for sampler in (TopK(temperature=0), TopP(temperature=0), MinP(temperature=0)):
        assert torch.equal(sampler.sample(logits), logits.argmax(-1))
    assert torch.equal(Greedy().sample(logits), logits.argmax(-1))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("top-k", {"temperature": -0.1}, "temperature"),
        ("top-k", {"top_k": 0}, "top_k"),
        ("top-p", {"top_p": 0}, "top_p"),
        ("top-p", {"top_p": 1.5}, "top_p"),
        ("min-p", {"min_p": 2}, "min_p"),
        ("beam", {"num_beams": 0}, "num_beams"),
        ("beam", {"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
        ("beam", {"early_stopping": "sometimes"}, "early_stopping"),
        ("greedy", {"temperature": 1}, "unknown option temperature"),
    ],
)
def test_bad_options_are_clear(name, options, message):
    with pytest.raises(OptionError, match=message):
        get_registry().samplers.create(name, options)


@pytest.mark.parametrize(("penalty", "n"), [(1.3, 0), (1.0, 2), (1.5, 3)])
def test_penalties_equal_transformers_processors(penalty, n):
    g = torch.Generator().manual_seed(3)
    history = torch.randint(0, 50, (3, 12), generator=g)
    history[:, 6:9] = history[:, 0:3]  # repeated n-grams
    logits = torch.randn(3, 50, generator=g)
    state = Penalties(history.tolist(), 50, torch.device("cpu"), penalty, n)
    ours = state.apply(logits.clone())
    expected = logits.clone()
    if penalty != 1.0:
        expected = RepetitionPenaltyLogitsProcessor(penalty)(history, expected)
    if n:
        expected = NoRepeatNGramLogitsProcessor(n)(history, expected)
    assert same(ours, expected)
    # one more token keeps them in step
    extra = torch.randint(0, 50, (3,), generator=g)
    state.update(extra.tolist())
    history = torch.cat([history, extra[:, None]], dim=1)
    expected = logits.clone()
    if penalty != 1.0:
        expected = RepetitionPenaltyLogitsProcessor(penalty)(history, expected)
    if n:
        expected = NoRepeatNGramLogitsProcessor(n)(history, expected)
    assert same(state.apply(logits.clone()), expected)
