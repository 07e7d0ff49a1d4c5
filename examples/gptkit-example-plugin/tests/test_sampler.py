"""The locally-typical sampler: registration, gptkit's sampler contract, the
typical set of Meister et al. (2022) on a hand-checked distribution, and
generation through ``gptkit generate``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gptkit.core.interfaces import Sampler
from gptkit.errors import OptionError
from gptkit.testing import check_sampler


def test_registered_by_this_distribution(registry):
    entry = registry.samplers.entry("locally-typical")
    assert entry.dist == "gptkit-example-plugin"
    assert issubclass(entry.load(), Sampler)


@pytest.mark.parametrize(
    "options", [{}, {"mass": 1.0}, {"mass": 0.2, "temperature": 0.5, "min_tokens": 3}]
)
def test_keeps_the_sampler_contract(registry, options):
    check_sampler(registry.samplers.create("locally-typical", **options))


def typical_set(probs: list[float], mass: float) -> set[int]:
    """The paper's definition, computed directly: sort by |-log p - H|, keep the
    shortest prefix whose probability reaches ``mass``."""
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    order = sorted(
        (i for i, p in enumerate(probs) if p > 0),
        key=lambda i: abs(-math.log(probs[i]) - entropy),
    )
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= mass:
            break
    return kept


@pytest.mark.parametrize("mass", [0.05, 0.2, 0.5, 0.9, 0.99])
def test_keeps_exactly_the_typical_set(registry, mass):
    probs = [0.45, 0.25, 0.12, 0.08, 0.05, 0.03, 0.02, 0.0]
    logits = torch.tensor([probs]).log()  # (1, V); the last token is at -inf
    sampler = registry.samplers.create("locally-typical", mass=mass)
    kept = torch.isfinite(sampler.process(logits))[0].nonzero().flatten().tolist()
    assert set(kept) == typical_set(probs, mass)


def test_the_most_likely_token_can_be_atypical(registry):
    # H is about 0.98 nats; -log 0.6 = 0.51 and -log 0.35 = 1.05: the second
    # token is the most typical one, so a small mass keeps only it.
    logits = torch.tensor([[0.6, 0.35, 0.05]]).log()
    sampler = registry.samplers.create("locally-typical", mass=0.1)
    assert torch.isfinite(sampler.process(logits)).tolist() == [[False, True, False]]


def test_bad_options_are_clear_errors(registry):
    with pytest.raises(OptionError, match="mass of sampler locally-typical must be <="):
        registry.samplers.create("locally-typical", mass=1.5)
    with pytest.raises(OptionError, match="unknown option top_k"):
        registry.samplers.create("locally-typical", top_k=3)


def test_generates_through_the_command_line(gptkit_cli, gptkit_checkpoint):
    args = [
        "generate",
        "--weights",
        str(gptkit_checkpoint),
        "--sampler",
        "locally-typical",
        "-o",
        "mass=0.5",
        "--seed",
        "7",
        "--max-new-tokens",
        "6",
        "--json",
        "We hold these truths",
    ]
    first = gptkit_cli(*args)
    assert first.exit_code == 0, first.output
    [result] = json.loads(first.stdout)["results"]
    assert 1 <= len(result["token_ids"]) <= 6
    assert json.loads(gptkit_cli(*args).stdout)["results"][0] == result  # seeded
