"""Quality of generated text: diversity, repetition and self-similarity.

Pure Python over token-id sequences (GPT-2 BPE tokens, not words), so the
numbers compare samplers on the same model and tokenizer; they are not
comparable to word-level figures in papers.

- **distinct-n** (Li, Galley, Brockett, Gao & Dolan, 2016, "A Diversity-Promoting
  Objective Function for Neural Conversation Models", NAACL): distinct n-grams
  divided by all n-grams of a set of generations.
- **repeated n-gram share** (Welleck, Kulikov, Roller, Dinan, Cho & Weston, 2020,
  "Neural Text Generation with Unlikelihood Training", ICLR: *seq-rep-n*): within
  one generation, the share of its n-grams that repeat an earlier one,
  1 - distinct/all.
- **BLEU** (Papineni, Roukos, Ward & Zhu, 2002, "BLEU: a Method for Automatic
  Evaluation of Machine Translation", ACL), sentence level: modified (clipped)
  n-gram precisions p_1..p_N, N = 4, combined as a geometric mean with uniform
  weights, times the brevity penalty BP = 1 if c > r else exp(1 - r/c), where c
  is the candidate's length and r the length of the reference closest to it
  (the shorter one on a tie). Smoothing: add-one on n-gram orders n >= 2,
  p_n = (m_n + 1) / (l_n + 1) (Lin & Och, 2004, "ORANGE", COLING; method 2 of
  Chen & Cherry, 2014), so one missing 4-gram match does not zero the score;
  p_1 is not smoothed, and BLEU is 0 when no unigram matches. An order with no
  candidate n-gram (a candidate shorter than n) thus has p_n = 1.
- **self-BLEU** (Zhu, Lu, Zheng, Guo, Zhang, Wang & Yu, 2018, "Texygen: A
  Benchmarking Platform for Text Generation Models", SIGIR): each sample's BLEU
  against the other samples of the same prompt as references, averaged; 1.0
  means the samples are identical (no diversity).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

Tokens = Sequence[Hashable]


def ngrams(tokens: Tokens, n: int) -> list[tuple[Hashable, ...]]:
    """The n-grams of a sequence, in order (none when it is shorter than n)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(sequences: Sequence[Tokens], n: int) -> float | None:
    """Distinct n-grams / all n-grams over a set of sequences (Li et al., 2016);
    None when there is no n-gram at all."""
    grams = [g for seq in sequences for g in ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_share(tokens: Tokens, n: int = 4) -> float | None:
    """Share of a sequence's n-grams that repeat an earlier one (seq-rep-n of
    Welleck et al., 2020); None when it has no n-gram."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else None


def mean_repeated_ngram_share(sequences: Sequence[Tokens], n: int = 4) -> float | None:
    """:func:`repeated_ngram_share` averaged over the sequences that have
    n-grams; None when none has."""
    shares = [
        s for s in (repeated_ngram_share(t, n) for t in sequences) if s is not None
    ]
    return sum(shares) / len(shares) if shares else None


def _closest_length(candidate_len: int, references: Sequence[Tokens]) -> int:
    """The reference length closest to the candidate's (shorter on a tie)."""
    return min((abs(len(r) - candidate_len), len(r)) for r in references)[1]


def bleu(candidate: Tokens, references: Sequence[Tokens], max_n: int = 4) -> float:
    """Sentence-level BLEU of ``candidate`` against ``references`` (Papineni et
    al., 2002) with add-one smoothing for orders >= 2 (see the module docs)."""
    if not references:
        raise ValueError("BLEU needs at least one reference")
    if not candidate:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        counts = Counter(ngrams(candidate, n))
        max_ref: Counter[tuple[Hashable, ...]] = Counter()
        for ref in references:
            for gram, count in Counter(ngrams(ref, n)).items():
                max_ref[gram] = max(max_ref[gram], count)
        matches = sum(min(c, max_ref[g]) for g, c in counts.items())
        total = sum(counts.values())
        if n == 1:
            if matches == 0:
                return 0.0
            precision = matches / total
        else:
            precision = (matches + 1) / (total + 1)
        log_sum += math.log(precision) / max_n
    c = len(candidate)
    r = _closest_length(c, references)
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    return brevity * math.exp(log_sum)


def self_bleu(samples: Sequence[Tokens], max_n: int = 4) -> float | None:
    """Mean BLEU of each sample against all the others (Zhu et al., 2018);
    None for fewer than two samples."""
    if len(samples) < 2:
        return None
    scores = [
        bleu(s, [o for j, o in enumerate(samples) if j != i], max_n)
        for i, s in enumerate(samples)
    ]
    return sum(scores) / len(scores)


def quality_summary(
    samples: Sequence[Sequence[Tokens]],
) -> dict[str, float | None]:
    """The benchmark's quality metrics of ``samples[repeat][prompt]``.

    - ``distinct_1/2/3``: distinct-n over the generations of one repeat (one per
      prompt), averaged over repeats, so it does not depend on the repeat count;
    - ``rep_4``: repeated 4-gram share, averaged over all generations;
    - ``self_bleu``: self-BLEU among the repeats' samples of each prompt,
      averaged over prompts (None with a single repeat).
    """
    out: dict[str, float | None] = {}
    for n in (1, 2, 3):
        values = [v for v in (distinct_n(rep, n) for rep in samples) if v is not None]
        out[f"distinct_{n}"] = sum(values) / len(values) if values else None
    out["rep_4"] = mean_repeated_ngram_share([s for rep in samples for s in rep], 4)
    prompts = len(samples[0]) if samples else 0
    per_prompt = [
        v
        for v in (self_bleu([rep[i] for rep in samples]) for i in range(prompts))
        if v is not None
    ]
    out["self_bleu"] = sum(per_prompt) / len(per_prompt) if per_prompt else None
    return out
