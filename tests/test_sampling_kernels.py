"""The sampling kernels (gptkit.system.sampling) give PyTorch's results bit for
bit: torch.multinomial's indices and generator state, the top-p sort's
threshold, beam search's top candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gptkit.system import sampling

pytestmark = pytest.mark.skipif(
    sampling.library() is None, reason="no C compiler for the sampling kernels"
)


def _pair(seed: int, skip: int = 0) -> tuple[torch.Generator, torch.Generator]:
    gens = (torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed))
    for g in gens:
        torch.rand(skip, generator=g)
    return gens


def _distributions():
    g = torch.Generator().manual_seed(3)
    for rows, vocab in ((1, 50257), (4, 50257), (2, 1000), (1, 1), (3, 7)):
        for scale in (0.3, 1.0, 8.0):
            logits = torch.randn(rows, vocab, generator=g) * scale
            yield logits.softmax(-1)
            kth = torch.topk(logits, min(50, vocab)).values[:, -1:]
            yield logits.masked_fill(logits < kth, float("-inf")).softmax(-1)


@pytest.mark.parametrize("skip", [0, 311, 624 * 3 - 1])
def test_multinomial_equals_torch_indices_and_generator_state(skip):
    assert sampling._agrees_with_torch()
    for i, probs in enumerate(_distributions()):
        mine, theirs = _pair(i, skip)
        for _ in range(3):
            got = sampling.multinomial(probs, mine)
            assert torch.equal(got, torch.multinomial(probs, 1, generator=theirs))
        assert torch.equal(mine.get_state(), theirs.get_state())


def test_multinomial_one_dimensional_and_default_generator():
    probs = torch.rand(50257) ** 8
    torch.manual_seed(5)
    got = [sampling.multinomial(probs) for _ in range(4)]
    after = torch.rand(3)
    torch.manual_seed(5)
    want = [torch.multinomial(probs, 1) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert got[0].shape == (1,)
    assert torch.equal(after, torch.rand(3))


def _with_words(gen: torch.Generator, first: int, second: int) -> None:
    """Make the generator's next two 32-bit words ``first`` and ``second``
    (tempering maps 0 to 0; other values are placed untempered only for 0)."""
    state = gen.get_state()
    raw = state.numpy()
    nxt = int(raw[16:24].view(np.uint64)[0])
    left = int(raw[8:12].view(np.int32)[0])
    assert left > 3 and nxt + 2 < 624
    key = raw[24 : 24 + 624 * 8].view(np.uint64)
    key[nxt], key[nxt + 1] = first, second
    gen.set_state(state)


@pytest.mark.parametrize("first_prob", [0.0, 0.5])
def test_multinomial_zero_uniform_gives_torchs_inf_or_nan_winner(first_prob):
    """u = 0 exactly: q = 0, so p / q is inf (p > 0) or NaN (p = 0); torch's
    argmax takes it either way."""
    probs = torch.full((1, 100), 1.0)
    probs[0, 0] = first_prob
    mine, theirs = _pair(1, 10)
    for g in (mine, theirs):
        _with_words(g, 0, 0)
    assert torch.equal(
        sampling.multinomial(probs, mine), torch.multinomial(probs, 1, generator=theirs)
    )
    assert torch.equal(mine.get_state(), theirs.get_state())


@pytest.mark.parametrize(
    "bad", [float("nan"), -1e-3, float("inf"), "zero row"], ids=str
)
def test_multinomial_refuses_what_torch_refuses(bad):
    probs = torch.rand(2, 300)
    if bad == "zero row":
        probs[1] = 0.0
    else:
        probs[1, 7] = bad
    mine, theirs = _pair(2)
    with pytest.raises(RuntimeError) as want:
        torch.multinomial(probs, 1, generator=theirs)
    with pytest.raises(RuntimeError) as got:
        sampling.multinomial(probs, mine)
    assert str(got.value) == str(want.value)
    assert torch.equal(mine.get_state(), theirs.get_state())


def test_multinomial_defers_to_torch_where_its_check_fails(monkeypatch):
    """Another PyTorch whose sampling differs: the self-check fails once and
    torch draws from then on."""
    monkeypatch.setattr(sampling, "_draw", lambda probs, gen: probs.new_zeros(1, 1))
    sampling._agrees_with_torch.cache_clear()
    try:
        probs = torch.rand(1, 500)
        mine, theirs = _pair(4)
        got = sampling.multinomial(probs, mine)
        assert torch.equal(got, torch.multinomial(probs, 1, generator=theirs))
        assert not sampling._agrees_with_torch()
    finally:
        sampling._agrees_with_torch.cache_clear()


def _sorted_threshold(probs: torch.Tensor, p: float) -> float:
    descending = torch.from_numpy(np.sort(probs.numpy())[::-1].copy())
    before = descending.cumsum(-1) - descending
    kept = max(int((before < p).sum()), 1)
    return float(descending[kept - 1])


def test_nucleus_threshold_equals_the_full_sort():
    g = torch.Generator().manual_seed(0)
    between = float(np.nextafter(np.float32(0.9), np.float32(1))) - 1e-9
    checked = 0
    for vocab in (50257, 151936, 1000, 7, 1):
        for scale in (0.05, 0.5, 2.0, 10.0):
            probs = (torch.randn(vocab, generator=g) * scale).softmax(-1)
            for p in (0.1, 0.5, 0.9, between, 0.95, 0.999, 1e-30):
                got = sampling.nucleus_threshold(probs, p)
                if got is not None:
                    assert got == _sorted_threshold(probs, p), (vocab, scale, p)
                    checked += 1
    assert checked > 120


def test_nucleus_threshold_with_ties_and_masked_logits():
    probs = torch.tensor([0.25, 0.125, 0.125, 0.125, 0.125, 0.25, 0.0])
    for p in (0.2, 0.25, 0.5, 0.6, 0.75, 0.9):
        assert sampling.nucleus_threshold(probs, p) == _sorted_threshold(probs, p)
    logits = torch.arange(7.0)
    out = torch.empty(7)
    t = sampling.nucleus_threshold(probs, 0.5, logits, out)
    assert torch.equal(out, logits.masked_fill(probs < t, float("-inf")))


def test_nucleus_threshold_declines_where_its_sums_would_not_be_exact():
    """A nucleus reaching values below 2^-29, or bad values: None (sort)."""
    probs = torch.full((2000,), 1e-12)
    probs[0] = 1.0 - float(probs[1:].sum())
    assert sampling.nucleus_threshold(probs, 0.99999999) is None
    assert sampling.nucleus_threshold(torch.tensor([0.5, float("nan")]), 0.9) is None
    assert sampling.nucleus_threshold(torch.tensor([0.5, -0.1]), 0.9) is None
    assert sampling.nucleus_threshold(torch.tensor([3.0, 0.1]), 0.9) is None


def test_nucleus_threshold_takes_only_float32_rows():
    probs = torch.tensor([0.5, 0.3, 0.2])
    assert sampling.nucleus_threshold(probs.double(), 0.6) is None
    assert sampling.nucleus_threshold(probs[None], 0.6) is None
    assert sampling.nucleus_threshold(probs, 0.6, probs, torch.empty(2)) is None
    with pytest.raises(ValueError):
        sampling.nucleus_threshold(probs, 0.6, logits=probs)


@pytest.mark.parametrize(
    ("rows", "vocab", "k"),
    [(4, 50257, 8), (1, 10, 2), (3, 7, 21), (2, 1000, 8), (6, 33, 12)],
)
def test_beam_top_equals_torch_topk_of_the_sums(rows, vocab, k):
    g = torch.Generator().manual_seed(rows * vocab + k)
    for scale in (0.5, 3.0, 30.0):
        logprobs = torch.log_softmax(torch.randn(rows, vocab, generator=g) * scale, -1)
        running = torch.randn(rows, generator=g) * scale
        running[1:] -= 1e9 * (scale > 10)  # beam search's first step
        got = sampling.beam_top(logprobs, running, k)
        want = torch.topk((logprobs + running[:, None]).view(-1), k)
        assert got is not None
        assert torch.equal(got[0], want.values)
        # Equal sums (the -1e9 rows' absorb their log-probabilities) may come
        # in any order from torch; the kernel gives them by index.
        for value in got[0].unique():
            ours, theirs = got[1][got[0] == value], want.indices[want.values == value]
            assert ours.tolist() == sorted(theirs.tolist())


def test_beam_top_orders_ties_by_index_and_keeps_minus_infinity():
    logprobs = torch.tensor(
        [[-1.0, -2.0, -1.0, float("-inf")], [-2.0, -1.0, -9.0, -3.0]]
    )
    values, index = sampling.beam_top(logprobs, torch.zeros(2), 8)
    assert index.tolist() == [0, 2, 5, 1, 4, 7, 6, 3]
    assert values[-1] == float("-inf")


def test_beam_top_declines_nan_and_what_it_cannot_take():
    logprobs = torch.zeros(2, 50)
    assert sampling.beam_top(logprobs, torch.tensor([0.0, float("nan")]), 4) is None
    logprobs[1, 33] = float("nan")
    assert sampling.beam_top(logprobs, torch.zeros(2), 4) is None
    ok = torch.zeros(2, 50)
    assert sampling.beam_top(ok, torch.zeros(2), 0) is None
    assert sampling.beam_top(ok, torch.zeros(2), 257) is None
    assert (
        sampling.beam_top(ok.double(), torch.zeros(2, dtype=torch.float64), 4) is None
    )
    assert sampling.beam_top(ok, torch.zeros(3), 4) is None
