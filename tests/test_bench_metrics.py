"""Quality metrics and statistics of ``gptkit bench``, against values worked out
by hand on small fixed sequences (the derivations are in the comments)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from gptkit.bench.measure import percentile, speed_spread
from gptkit.bench.metrics import (
    bleu,
    distinct_n,
    mean_repeated_ngram_share,
    ngrams,
    quality_summary,
    repeated_ngram_share,
    self_bleu,
)
from gptkit.bench.sampling import generated_nll


def test_ngrams():
    assert ngrams([1, 2, 3], 2) == [(1, 2), (2, 3)]
    assert ngrams([1, 2], 3) == []


def test_distinct_n_pools_the_set():
    seqs = [[1, 2, 1, 2], [1, 2, 3]]
    # unigrams: 4 + 3 = 7, distinct {1, 2, 3}
    assert distinct_n(seqs, 1) == pytest.approx(3 / 7)
    # bigrams: 12 21 12 | 12 23 -> 5, distinct {12, 21, 23}
    assert distinct_n(seqs, 2) == pytest.approx(3 / 5)
    # trigrams: 121 212 | 123 -> 3, all distinct
    assert distinct_n(seqs, 3) == 1.0
    assert distinct_n([[1, 2]], 3) is None


def test_repeated_four_gram_share():
    # 1234 2341 3412 4123 1234: 5 four-grams, 4 distinct -> 1 - 4/5
    assert repeated_ngram_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(0.2)
    assert repeated_ngram_share([1, 2, 3, 4, 5]) == 0.0
    assert repeated_ngram_share([7, 7, 7, 7, 7, 7]) == pytest.approx(2 / 3)
    assert repeated_ngram_share([1, 2, 3]) is None
    # the mean skips sequences without a 4-gram
    seqs = [[1, 2, 3, 4, 1, 2, 3, 4], [1, 2, 3, 4, 5], [1]]
    assert mean_repeated_ngram_share(seqs) == pytest.approx(0.1)


def test_bleu_of_an_identical_candidate_is_one():
    assert bleu([1, 2, 3, 4, 5], [[1, 2, 3, 4, 5]]) == pytest.approx(1.0)


def test_bleu_worked_example():
    # candidate 1 2 3 4 5, reference 1 2 3 4 6 (same length: BP = 1)
    # p1 = 4/5; p2 = (3+1)/(4+1); p3 = (2+1)/(3+1); p4 = (1+1)/(2+1)
    expected = (4 / 5 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25  # 0.32 ** 0.25 = 0.75212
    assert bleu([1, 2, 3, 4, 5], [[1, 2, 3, 4, 6]]) == pytest.approx(expected)
    assert expected == pytest.approx(0.752121, abs=1e-6)


def test_bleu_clips_counts_by_the_reference():
    # Papineni's "the the the ..." case: 7 7 7 7 against 7 1.
    # p1 = min(4, 1)/4; p2 = (0+1)/(3+1); p3 = (0+1)/(2+1); p4 = (0+1)/(1+1);
    # c = 4 > r = 2: no brevity penalty.
    expected = (1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** 0.25  # 0.31947
    assert bleu([7, 7, 7, 7], [[7, 1]]) == pytest.approx(expected)


def test_bleu_brevity_penalty():
    # candidate 1 2 against 1 2 3 4: every precision is 1 (p3, p4 have no
    # candidate n-gram: (0+1)/(0+1)), BP = exp(1 - 4/2)
    assert bleu([1, 2], [[1, 2, 3, 4]]) == pytest.approx(math.exp(-1))


def test_bleu_effective_reference_length_is_the_closest_shorter_on_a_tie():
    # c = 3; references of length 2 and 4 are equally close: r = 2, so BP = 1
    # (r = 4 would give exp(1 - 4/3) = 0.72); all precisions are 1.
    assert bleu([1, 2, 3], [[1, 2], [1, 2, 3, 4]]) == pytest.approx(1.0)


def test_bleu_without_a_unigram_match_is_zero():
    assert bleu([5, 6, 7], [[1, 2, 3]]) == 0.0
    assert bleu([], [[1, 2, 3]]) == 0.0
    with pytest.raises(ValueError):
        bleu([1], [])


def test_self_bleu():
    a, b = [1, 2, 3, 4, 5], [1, 2, 3, 4, 6]
    # a against {b, a}: a copy of itself is a reference -> 1; b against {a, a}:
    # the worked example 0.32 ** 0.25; the second a -> 1.
    expected = (1 + 0.32**0.25 + 1) / 3
    assert self_bleu([a, b, a]) == pytest.approx(expected)
    assert self_bleu([a, a]) == pytest.approx(1.0)
    assert self_bleu([a]) is None


def test_quality_summary_layout_is_repeats_by_prompts():
    # two repeats of two prompts
    samples = [
        [[1, 2, 3, 4, 5], [9, 9, 9, 9, 9]],  # repeat 0
        [[1, 2, 3, 4, 6], [9, 9, 9, 9, 9]],  # repeat 1
    ]
    q = quality_summary(samples)
    # distinct-1 per repeat: {1,2,3,4,5,9} / 10 and {1,2,3,4,6,9} / 10
    assert q["distinct_1"] == pytest.approx(0.6)
    # distinct-2: 4 bigrams + 4 bigrams (9 9 x4) -> 5 distinct / 8, both repeats
    assert q["distinct_2"] == pytest.approx(5 / 8)
    # rep-4: 0, 0 for the counting ones; 9 9 9 9 9 has 2 four-grams, 1 distinct
    assert q["rep_4"] == pytest.approx((0 + 0.5 + 0 + 0.5) / 4)
    # self-BLEU: prompt 0 -> mean of 0.32**0.25 both ways; prompt 1 -> 1
    assert q["self_bleu"] == pytest.approx((0.32**0.25 + 1) / 2)
    assert quality_summary([[[1, 2, 3]]])["self_bleu"] is None


def test_percentile_interpolates_linearly():
    # positions (n - 1) q / 100 over 1 2 3 4: p50 at 1.5 -> 2.5, p90 at 2.7 -> 3.7
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert percentile([4, 1, 3, 2], 90) == pytest.approx(3.7)
    assert percentile([5.0], 90) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_speed_spread():
    # repeats of 1.0 s and 1.25 s: speeds 1 and 0.8 of the best -> 20% spread
    assert speed_spread([1.25, 1.0]) == pytest.approx(0.2)
    assert speed_spread([1.0]) is None


class _FixedModel(torch.nn.Module):
    """Every position predicts p = (1/2, 1/4, 1/8, 1/8) over a 4-token vocab."""

    def __init__(self, context_length: int) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(context_length=context_length)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.seen.append(ids[0].tolist())
        probs = torch.tensor([0.5, 0.25, 0.125, 0.125])
        return probs.log().expand(ids.shape[0], ids.shape[1], 4)


def test_generated_nll_scores_only_the_new_tokens():
    model = _FixedModel(context_length=16)
    # new tokens 0, 1, 2: -log(1/2) - log(1/4) - log(1/8) = 6 ln 2
    total, count = generated_nll(model, [3, 3, 3], [0, 1, 2])
    assert count == 3
    assert total == pytest.approx(6 * math.log(2))
    assert model.seen == [[3, 3, 3, 0, 1]]  # one pass over prompt + new[:-1]
    assert generated_nll(model, [3], []) == (0.0, 0)


def test_generated_nll_keeps_the_last_context_window():
    model = _FixedModel(context_length=2)
    # prompt 3 3 3 + new 0 1 2 = 6 tokens; the window is the last 3 (2 inputs),
    # which predict 1 and 2: -log(1/4) - log(1/8) = 5 ln 2
    total, count = generated_nll(model, [3, 3, 3], [0, 1, 2])
    assert count == 2
    assert total == pytest.approx(5 * math.log(2))
    assert model.seen == [[0, 1]]
