"""A sampler's own cost per token on a GPT-2 vocabulary (50,257 tokens), the
distribution flat as a random-weight model's (logits ~ N(0, 0.5), top-p 0.9 at
temperature 0.8, the bench's top-p settings): PyTorch's draw and numpy's sort
against gptkit's C kernels (:mod:`gptkit.system.sampling`), which give the same
tokens; and beam search's choice of candidates (4 beams: the top 8 of
4 x 50,257 summed log-probabilities), ``torch.topk`` against ``beam_top``.
"tokens/s" here is draws (choices) per second.

    pytest benchmarks/test_sampling_draw.py --benchmark-only

One thread, like ``gptkit bench``'s first row.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import ratio
from gptkit.bench.measure import torch_threads
from gptkit.plugins.samplers import warpers
from gptkit.plugins.samplers.token import TopP
from gptkit.system import sampling

DRAWS = 200
VOCAB = 50257

ratio("gptkit multinomial", "torch.multinomial", 5.0)
ratio("gptkit top-p warper", "top-p warper, numpy sort", 5.0)
ratio("gptkit top-p sample", "top-p sample, torch draw + numpy sort", 3.0)
ratio("gptkit beam candidates", "beam candidates, torch add + topk", 3.0)

pytestmark = pytest.mark.skipif(
    sampling.library() is None, reason="no C compiler for the sampling kernels"
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1, "cpu"):
        yield


@pytest.fixture(scope="module")
def logits():
    return torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(0)) * 0.5


def _bench(benchmark, recorder, name, step):
    def run():
        for _ in range(DRAWS):
            step()
        return DRAWS

    tokens = benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    recorder(benchmark, name, tokens)


def test_torch_multinomial(benchmark, recorder, logits):
    benchmark.group = "draw"
    probs = logits.softmax(-1)
    _bench(
        benchmark, recorder, "torch.multinomial", lambda: torch.multinomial(probs, 1)
    )


def test_gptkit_multinomial(benchmark, recorder, logits):
    benchmark.group = "draw"
    probs = logits.softmax(-1)
    _bench(
        benchmark, recorder, "gptkit multinomial", lambda: sampling.multinomial(probs)
    )


def test_top_p_numpy_sort(benchmark, recorder, logits, monkeypatch):
    benchmark.group = "top-p"
    monkeypatch.setattr(warpers, "nucleus_threshold", lambda *a, **k: None)
    name = "top-p warper, numpy sort"
    _bench(benchmark, recorder, name, lambda: warpers.top_p(logits / 0.8, 0.9))


def test_top_p_in_c(benchmark, recorder, logits):
    benchmark.group = "top-p"
    name = "gptkit top-p warper"
    _bench(benchmark, recorder, name, lambda: warpers.top_p(logits / 0.8, 0.9))


def test_top_p_sample_as_before(benchmark, recorder, logits, monkeypatch):
    """The whole sampler step as it was: numpy's sort, torch's draw."""
    benchmark.group = "top-p sample"
    monkeypatch.setattr(warpers, "nucleus_threshold", lambda *a, **k: None)
    monkeypatch.setattr(sampling, "_applies", lambda *a: False)
    sampler = TopP(top_p=0.9, temperature=0.8)
    name = "top-p sample, torch draw + numpy sort"
    _bench(benchmark, recorder, name, lambda: sampler.sample(logits))


def test_top_p_sample(benchmark, recorder, logits):
    benchmark.group = "top-p sample"
    sampler = TopP(top_p=0.9, temperature=0.8)
    _bench(benchmark, recorder, "gptkit top-p sample", lambda: sampler.sample(logits))


@pytest.fixture(scope="module")
def beam_logprobs():
    gen = torch.Generator().manual_seed(1)
    return torch.log_softmax(torch.randn(4, VOCAB, generator=gen) * 0.5, -1)


def test_beam_candidates_torch(benchmark, recorder, beam_logprobs):
    benchmark.group = "beam candidates"
    running = torch.tensor([-1.0, -1.5, -2.0, -2.5])
    name = "beam candidates, torch add + topk"
    _bench(
        benchmark,
        recorder,
        name,
        lambda: torch.topk((beam_logprobs + running[:, None]).view(-1), 8),
    )


def test_beam_candidates_in_c(benchmark, recorder, beam_logprobs):
    benchmark.group = "beam candidates"
    running = torch.tensor([-1.0, -1.5, -2.0, -2.5])
    name = "gptkit beam candidates"
    _bench(
        benchmark, recorder, name, lambda: sampling.beam_top(beam_logprobs, running, 8)
    )
