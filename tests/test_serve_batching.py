"""The continuous-batching engine (core/batching.py) and the text stream, in
process: rows sample as they would alone, join and leave a running batch, and
fail, time out or get cancelled alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gptkit.core.generate import generate_tokens
from gptkit.core.interfaces import Sampler
from gptkit.core.registry import get_registry
from gptkit.core.text import generate_text
from gptkit.core.tokenizer import encode
from gptkit.serve.engine.batching import (
    BatchingEngine,
    BatchRequest,
    Delta,
    Done,
    EngineClosed,
    Finished,
    QueueFull,
)
from tests.helpers import tiny_model

PROMPTS = ["Every effort moves you", "x", "The list of things that matter most", "A"]


@pytest.fixture(scope="module")
def model():
    return tiny_model(3, context_length=64)


@pytest.fixture
def engine(model):
    eng = BatchingEngine(model, max_batch_size=4, max_queue=8)
    yield eng
    eng.close(10)


def sampler(name: str = "greedy", **options):
    if name == "slow-greedy":
        return SlowGreedy()
    return get_registry().samplers.create(name, options)


def collect(handle) -> dict:
    """{choice: (text, token ids, finish reason)} plus "done"."""
    out: dict = {}
    for event in handle.events():
        if isinstance(event, Delta):
            text, ids, reason = out.get(event.choice, ("", [], None))
            out[event.choice] = (text + event.text, ids + event.token_ids, reason)
        elif isinstance(event, Finished):
            text, ids, _ = out.get(event.choice, ("", [], None))
            out[event.choice] = (text, ids, event.reason)
        elif isinstance(event, Done):
            out["done"] = event
    return out


def alone(model, prompt: str, name: str, seed=None, n=12, **options) -> str:
    [result] = generate_text(
        model, [prompt], sampler(name, **options), max_new_tokens=n, seed=seed
    )
    return result.completion


def test_rows_in_one_batch_get_what_they_get_alone(model, engine):
    """Different prompt lengths, samplers, seeds and n share the decode steps;
    each choice equals generate_text on its prompt alone (choice i: seed + i)."""
    requests = [
        BatchRequest(encode(PROMPTS[0]), sampler(), 12),
        BatchRequest(encode(PROMPTS[1]), sampler("top-k", top_k=None), 12, seed=5),
        BatchRequest(encode(PROMPTS[2]), sampler("top-p", top_p=0.8), 12, n=2, seed=9),
    ]
    handles = [engine.submit(r) for r in requests]
    engine.start()
    results = [collect(h) for h in handles]
    assert results[0][0][0] == alone(model, PROMPTS[0], "greedy")
    assert results[1][0][0] == alone(model, PROMPTS[1], "top-k", 5, top_k=None)
    for choice in (0, 1):
        expected = alone(model, PROMPTS[2], "top-p", 9 + choice, top_p=0.8)
        assert results[2][choice][0] == expected
    assert all(r["done"].error is None for r in results)
    # the three prompts were prefilled together, then 11 decode steps gave the
    # 4 rows their other tokens (one after another: 44 steps)
    assert engine.steps == 11


def test_a_request_joins_a_running_batch_at_the_next_step(model, engine):
    engine.start()
    first = engine.submit(BatchRequest(encode(PROMPTS[0]), sampler("slow-greedy"), 40))
    events = first.events()
    next(events)  # the first request is decoding
    late = engine.submit(BatchRequest(encode(PROMPTS[2]), sampler(), 10))
    late_result = collect(late)
    rest = list(events)
    assert late_result[0][0] == alone(model, PROMPTS[2], "greedy", n=10)
    assert any(isinstance(e, Delta) for e in rest)  # first still ran after it
    done = rest[-1]
    assert isinstance(done, Done) and done.error is None


def test_stop_strings_end_a_row_and_free_it(model, engine):
    engine.start()
    full = alone(model, PROMPTS[0], "greedy", n=30)
    stop = full.split()[3]
    result = collect(
        engine.submit(
            BatchRequest(encode(PROMPTS[0]), sampler(), 30, stop_strings=[stop])
        )
    )
    text, ids, reason = result[0]
    assert text == full[: full.index(stop)]
    assert reason == "stop"
    [expected] = generate_text(
        model, [PROMPTS[0]], sampler(), max_new_tokens=30, stop_strings=[stop]
    )
    assert text == expected.completion and ids == expected.new_ids
    assert engine.running == 0 and engine.cache.lengths == [0] * 4


def test_cancel_frees_the_rows_at_once(engine):
    engine.start()
    handle = engine.submit(
        BatchRequest(encode(PROMPTS[0]), sampler("slow-greedy"), 60, n=3)
    )
    events = handle.events()
    next(events)
    assert engine.running == 3
    engine.cancel(handle)
    done = next(e for e in events if isinstance(e, Done))
    assert done.error == "cancelled"
    assert engine.running == 0 and engine.cache.lengths == [0] * 4


def test_a_full_queue_refuses_and_a_closed_engine_refuses(model):
    eng = BatchingEngine(model, max_batch_size=1, max_queue=2)
    requests = [BatchRequest(encode("a"), sampler(), 5) for _ in range(3)]
    eng.submit(requests[0])
    eng.submit(requests[1])
    with pytest.raises(QueueFull):
        eng.submit(requests[2])
    eng.start()
    eng.close(10)
    with pytest.raises(EngineClosed):
        eng.submit(requests[2])


def test_a_request_past_its_timeout_ends_with_timeout(engine):
    engine.start()
    slow = BatchRequest(encode("a"), sampler("slow-greedy"), 60, timeout=0.2)
    result = collect(engine.submit(slow))
    assert result["done"].error == "timeout"
    assert engine.running == 0


def test_a_failing_sampler_fails_its_request_alone(model, engine):
    good = engine.submit(BatchRequest(encode(PROMPTS[0]), sampler(), 12))
    bad = engine.submit(BatchRequest(encode(PROMPTS[2]), Exploding(), 12))
    engine.start()
    bad_result, good_result = collect(bad), collect(good)
    assert bad_result["done"].error == "internal"
    assert "on purpose" in bad_result["done"].message
    assert good_result[0][0] == alone(model, PROMPTS[0], "greedy")
    assert engine.alive


def test_long_prompts_are_prefilled_in_chunks(model):
    eng = BatchingEngine(model, max_batch_size=2, prefill_chunk=3).start()
    try:
        prompt = PROMPTS[2] * 2
        result = collect(eng.submit(BatchRequest(encode(prompt), sampler(), 10)))
        assert result[0][0] == alone(model, prompt, "greedy", n=10)
    finally:
        eng.close(10)


def test_search_strategies_run_beside_the_batch(model, engine):
    beam = sampler("beam", num_beams=3, num_return_sequences=2)
    handle = engine.submit(BatchRequest(encode(PROMPTS[0]), beam, 8))
    engine.start()
    result = collect(handle)
    expected = generate_tokens(
        model,
        [encode(PROMPTS[0])],
        sampler("beam", num_beams=3, num_return_sequences=2),
        max_new_tokens=8,
    )
    assert [result[c][1] for c in (0, 1)] == [
        r.new_ids[:-1] if r.finish_reason == "eos" else r.new_ids for r in expected
    ]


def test_logprobs_of_prompt_and_completion(model, engine):
    ids = encode(PROMPTS[0])
    engine.start()
    handle = engine.submit(
        BatchRequest(ids, sampler(), 3, logprobs=2, prompt_logprobs=True)
    )
    deltas = [e for e in handle.events() if isinstance(e, Delta | Done)]
    done = deltas[-1]
    assert [p.token_id for p in done.prompt_logprobs] == ids
    assert done.prompt_logprobs[0].logprob is None
    with torch.inference_mode():
        full = torch.log_softmax(model(torch.tensor([ids]))[0].float(), -1)
    for pos in range(1, len(ids)):
        entry = done.prompt_logprobs[pos]
        assert entry.logprob == pytest.approx(float(full[pos - 1, ids[pos]]), abs=1e-4)
        assert len(entry.top) == 2
    first = deltas[0].logprobs[0]
    assert first.logprob == pytest.approx(float(full[-1].max()), abs=1e-4)
    assert first.top[0][0] == first.token_id


class Exploding(Sampler):
    name = "exploding"

    def sample(self, logits, generator=None):
        raise RuntimeError("failed on purpose")


class SlowGreedy(Sampler):
    name = "slow-greedy"
    deterministic = True

    def sample(self, logits, generator=None):
        time.sleep(0.02)
        return logits.argmax(dim=-1)


def test_engine_threads_stop_on_close(model):
    eng = BatchingEngine(model).start()
    eng.close(10)
    assert not eng.alive
    assert not any(t.name.startswith("gptkit-") for t in threading.enumerate())
