"""Issue 22, in process: what one request gets wrong fails that request alone,
before anything is allocated for it (the continuous-batching engine), and the
pieces the server's limits rest on (tokenizer, text stream, request schema)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gptkit.api.text import TextStream, generate_text
from gptkit.core.interfaces import Sampler
from gptkit.core.registry import get_registry
from gptkit.core.tokenizer import encode, get_tokenizer
from gptkit.errors import GptkitError
from gptkit.serve.engine.batching import (
    BatchingEngine,
    BatchRequest,
    Delta,
    Done,
    Finished,
)
from tests.helpers import tiny_model

POISON = 7777  # a token id the poisoned model refuses to read


@pytest.fixture(scope="module")
def model():
    return tiny_model(5, context_length=64)


def sampler(name: str = "greedy", **options):
    return get_registry().samplers.create(name, options)


def collect(handle) -> dict:
    out: dict = {}
    for event in handle.events():
        if isinstance(event, Delta):
            text, ids = out.get(event.choice, ("", []))
            out[event.choice] = (text + event.text, ids + event.token_ids)
        elif isinstance(event, Finished):
            out.setdefault(event.choice, ("", []))
        elif isinstance(event, Done):
            out["done"] = event
    return out


def alone(model, prompt: list[int], n: int = 6) -> list[int]:
    text = generate_text(
        model, [get_tokenizer().decode(prompt)], sampler(), max_new_tokens=n
    )
    return text[0].new_ids


# -- fault 3: a bad seed, a failing row, a failing shared prefill ---------------


def test_seeds_a_generator_cannot_take_are_refused_at_submit(model):
    engine = BatchingEngine(model, max_batch_size=4)
    top_k = sampler("top-k", temperature=1.0)
    for seed, n in ((2**64, 1), (2**64 - 1, 2), (-1, 1)):
        with pytest.raises(GptkitError, match="seed must be between 0 and"):
            engine.submit(BatchRequest([1, 2], top_k, 4, n=n, seed=seed))
    assert engine.queued == 0
    engine.submit(BatchRequest([1, 2], top_k, 4, n=2, seed=2**63 - 1))  # fits


class FailsToStart(Sampler):
    name = "fails-to-start"

    def start(self, batch_size: int) -> None:
        raise RuntimeError("this sampler cannot start")

    def sample(self, logits, generator=None):
        return logits.argmax(dim=-1)


def test_a_row_that_fails_to_start_fails_its_request_alone(model):
    """Requests admitted in one prefill group: the one whose rows cannot be set
    up fails; the others (before and after it in the group) are served."""
    engine = BatchingEngine(model, max_batch_size=6, max_queue=8)
    prompts = [encode("Every effort"), encode("x y"), encode("The list")]
    good = [engine.submit(BatchRequest(p, sampler(), 6)) for p in prompts[:2]]
    bad = engine.submit(BatchRequest(encode("A"), FailsToStart(), 6, n=2))
    good.append(engine.submit(BatchRequest(prompts[2], sampler(), 6)))
    engine.start()
    try:
        results = [collect(h) for h in good]
        failed = collect(bad)
    finally:
        engine.close(10)
    assert failed["done"].error == "internal"
    assert "cannot start" in failed["done"].message
    for prompt, result in zip(prompts, results, strict=True):
        assert result["done"].error is None
        assert result[0][1] == alone(model, prompt)


def test_a_failing_shared_prefill_fails_only_the_request_at_fault(model):
    """The forward pass of a prefill group fails because of one request's
    prompt: every request of the group is prefilled again alone, and only that
    one fails."""

    def refuse_poison(module, args, kwargs):
        if (args[0] == POISON).any():
            raise RuntimeError("the poisoned token")

    hook = model.register_forward_pre_hook(refuse_poison, with_kwargs=True)
    engine = BatchingEngine(model, max_batch_size=4, max_queue=8)
    prompts = [encode("Every effort"), [5, POISON, 9], encode("x y"), [3]]
    handles = [engine.submit(BatchRequest(p, sampler(), 6)) for p in prompts]
    engine.start()
    try:
        results = [collect(h) for h in handles]
    finally:
        engine.close(10)
        hook.remove()
    assert results[1]["done"].error == "internal"
    assert "poisoned" in results[1]["done"].message
    for i in (0, 2, 3):
        assert results[i]["done"].error is None, results[i]["done"]
        assert results[i][0][1] == alone(model, prompts[i])


# -- fault 1: a search is bounded by the batch and stops when told -------------


def test_a_search_wider_than_the_batch_is_refused_before_it_runs(model):
    engine = BatchingEngine(model, max_batch_size=4)
    for beams in (5, 5000, 10**6):
        with pytest.raises(GptkitError, match="at most 4"):
            engine.submit(BatchRequest([1], sampler("beam", num_beams=beams), 4))
    assert engine.queued == 0


def test_a_search_stops_at_its_cancel_and_its_timeout(model):
    def slow(module, args):
        time.sleep(0.03)

    hook = model.register_forward_pre_hook(slow)
    engine = BatchingEngine(model, max_batch_size=4).start()
    try:
        beam = sampler("beam", num_beams=2)
        handle = engine.submit(BatchRequest([1, 2], beam, 60, stop_at_eos=False))
        threading.Timer(0.3, engine.cancel, [handle]).start()
        start = time.monotonic()
        assert collect(handle)["done"].error == "cancelled"
        assert time.monotonic() - start < 1.2  # 60 steps would take >= 1.8 s
        beam = sampler("beam", num_beams=2)
        timed = BatchRequest([1, 2], beam, 60, stop_at_eos=False, timeout=0.3)
        start = time.monotonic()
        assert collect(engine.submit(timed))["done"].error == "timeout"
        assert time.monotonic() - start < 1.2
    finally:
        hook.remove()
        engine.close(10)


# -- fault 12: a vocabulary smaller than the tokenizer's -----------------------


def test_a_small_vocabulary_refuses_prompts_it_cannot_read(model):
    small = tiny_model(1, context_length=32, vocab_size=1000)
    engine = BatchingEngine(small, max_batch_size=2).start()
    try:
        with pytest.raises(GptkitError, match="outside this model's vocabulary"):
            engine.submit(BatchRequest(encode("Every effort"), sampler(), 4))
        with pytest.raises(GptkitError, match="lacks"):
            engine.submit(BatchRequest([], sampler(), 4))
        with pytest.raises(GptkitError, match="logit_bias names token id 5000"):
            engine.submit(BatchRequest([1], sampler(), 4, logit_bias={5000: 1.0}))
        result = collect(engine.submit(BatchRequest([1, 999], sampler(), 4)))
        assert result["done"].error is None and len(result[0][1]) == 4
    finally:
        engine.close(10)


# -- fault 5: a million whitespace characters ---------------------------------------


def test_a_million_whitespace_characters_encode():
    assert len(encode(" " * 1_000_000)) == 1_000_000
    ids = encode("a" + "\n" * 1_000_000 + "b")
    assert get_tokenizer().decode(ids) == "a" + "\n" * 1_000_000 + "b"


# -- fault 19: a long stop string does not turn a stream into one chunk --------


def test_a_stream_holds_back_only_what_may_start_a_stop_string():
    ids = encode(" one two three four five six seven eight nine ten")
    stream = TextStream(["z" * 500, " ten and more"], eos_id=None)
    pieces = [stream.update(ids[: i + 1], False) for i in range(len(ids))]
    assert sum(1 for p in pieces if p) >= len(ids) - 2  # one piece per token
    assert "".join(pieces) == " one two three four five six seven eight nine"
    assert stream.update(ids, True) == " ten"  # finished: the rest
    # what may still become a stop string is held
    partial = TextStream(["nine ten!"], eos_id=None)
    assert partial.update(ids[:-1], False).endswith("eight ")


# -- fault 14: request fields that must be 400, never 500 ----------------------


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ('{"logit_bias": {"²": 1}}', "logit_bias", "token ids"),
        ('{"logit_bias": {"' + "9" * 5000 + '": 1}}', "logit_bias", "token ids"),
        ('{"logit_bias": {"1": 1e400}}', None, ""),
        ('{"seed": 18446744073709551616}', "seed", "less than or equal"),
        ('{"seed": -1}', "seed", "greater than or equal"),
        ('{"stop": ["' + "s" * 1001 + '"]}', "stop", "at most 1000"),
        ('{"prompt": 1e999}', None, ""),
    ],
)
def test_request_fields_out_of_bounds_are_400(body, param, fragment):
    pytest.importorskip("pydantic")
    from gptkit.serve.errors import APIError
    from gptkit.serve.schemas import CompletionRequest, parse_request

    fields = '{"model": "m", "prompt": "x", ' + body[1:]
    with pytest.raises(APIError) as caught:
        parse_request(CompletionRequest, fields.encode())
    assert caught.value.status == 400
    if param is not None:
        assert caught.value.param == param
    assert fragment in caught.value.message


def test_logit_bias_allows_300_tokens():
    pytest.importorskip("pydantic")
    from gptkit.serve.schemas import CompletionRequest

    ok = {str(i): 1.0 for i in range(300)}
    CompletionRequest(model="m", prompt="x", logit_bias=ok)
    with pytest.raises(ValueError, match="at most 300"):
        CompletionRequest(model="m", prompt="x", logit_bias={**ok, "300": 1.0})


def test_torch_generators_take_what_the_engine_lets_through():
    from gptkit.serve.engine.batching import MAX_SEED

    torch.Generator().manual_seed(MAX_SEED)
    with pytest.raises((ValueError, RuntimeError, OverflowError)):
        torch.Generator().manual_seed(MAX_SEED + 1)
