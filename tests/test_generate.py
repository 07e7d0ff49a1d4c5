import pytest
import torch

from gptkit.api.text import generate_text
from gptkit.core.generate import generate_tokens
from gptkit.core.tokenizer import EOT_ID
from gptkit.errors import GptkitError
from gptkit.plugins.samplers.token import Greedy, TopK
from tests.helpers import greedy_without_cache, tiny_model


def favour(model, token: int) -> None:
    """Give the output head a bias that makes ``token`` the argmax."""
    bias = torch.zeros(model.cfg.vocab_size)
    bias[token] = 1000.0
    model.out_head.bias = torch.nn.Parameter(bias)


def test_cached_greedy_equals_the_no_cache_loop_while_the_window_slides():
    model = tiny_model()  # context 32: 40 new tokens slide the window
    prompt = [464, 3290, 318, 257, 2829]
    out = generate_tokens(model, [prompt], Greedy(), max_new_tokens=40, eos_id=None)
    assert out[0].new_ids == greedy_without_cache(model, prompt, 40)


def test_a_batch_gives_each_prompt_its_own_text():
    model = tiny_model(seed=3)
    prompts = [[464], [464, 3290, 318, 257, 2829, 11, 290], [50, 60, 70]]
    batch = generate_tokens(model, prompts, Greedy(), max_new_tokens=30, eos_id=None)
    for prompt, result in zip(prompts, batch, strict=True):
        assert result.new_ids == greedy_without_cache(model, prompt, 30)


def test_stops_at_end_of_text():
    model = tiny_model()
    favour(model, EOT_ID)
    out = generate_tokens(model, [[1, 2, 3]], Greedy(), max_new_tokens=10)
    assert out[0].new_ids == [EOT_ID] and out[0].finish_reason == "eos"


def test_empty_prompt_starts_from_end_of_text():
    out = generate_tokens(tiny_model(), [[]], Greedy(), max_new_tokens=1, eos_id=None)
    assert out[0].prompt_ids == [EOT_ID]


def test_long_prompt_is_cut_or_refused():
    model = tiny_model()
    long = list(range(100, 150))
    out = generate_tokens(model, [long], Greedy(), max_new_tokens=2, eos_id=None)
    assert out[0].prompt_ids == long[-32:]
    with pytest.raises(GptkitError, match="more than the context length 32"):
        generate_tokens(model, [long], Greedy(), max_new_tokens=2, truncate=False)


def test_padded_vocabulary_ids_are_never_emitted():
    model = tiny_model(vocab_size=50304)  # padded to a multiple of 64
    favour(model, 50300)
    out = generate_tokens(model, [[1, 2]], Greedy(), max_new_tokens=5, eos_id=None)
    assert all(t < 50257 for t in out[0].new_ids)


def test_seeded_sampling_is_reproducible_and_stop_strings_cut_text():
    model = tiny_model()
    sampler = TopK(temperature=1.5, top_k=50)
    a = generate_text(model, ["Hello"], sampler, max_new_tokens=20, seed=7)
    b = generate_text(model, ["Hello"], sampler, max_new_tokens=20, seed=7)
    assert a[0].new_ids == b[0].new_ids
    text = a[0].completion
    stop = text[5:8]
    c = generate_text(
        model, ["Hello"], sampler, max_new_tokens=20, seed=7, stop_strings=[stop]
    )
    assert c[0].finish_reason == "stop"
    assert c[0].completion == text[: text.find(stop)]


def test_top_k_keeps_k_tokens_and_temperature_zero_is_greedy():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    processed = TopK(top_k=2, temperature=1.0).process(logits)
    assert (
        torch.isinf(processed[0, [0, 3]]).all()
        and torch.isfinite(processed[0, [1, 2]]).all()
    )
    assert TopK(temperature=0.0).sample(logits).tolist() == [1]
    draws = {int(TopK(top_k=2).sample(logits)) for _ in range(200)}
    assert draws == {1, 2}


def test_streamed_pieces_add_up_to_the_returned_completion():
    """Streaming holds back what may change (a stop string's start, half a
    UTF-8 character), so the pieces always equal the non-streamed text."""
    from gptkit.api.text import TextGeneration

    model = tiny_model()
    sampler = TopK(temperature=1.5, top_k=50)
    prompts = ["Hello", "A somewhat longer prompt than the first"]
    free = generate_text(model, prompts, sampler, max_new_tokens=25, seed=3)
    stop = free[0].completion[6:9]
    generation = TextGeneration(
        model, prompts, sampler, max_new_tokens=25, seed=3, stop_strings=[stop]
    )
    pieces = {0: "", 1: ""}
    for row, piece in generation:
        pieces[row] += piece
    results = generation.results
    assert results[0].finish_reason == "stop" and stop not in results[0].completion
    assert [pieces[0], pieces[1]] == [r.completion for r in results]


def test_text_stream_holds_back_partial_characters_and_stop_prefixes():
    from gptkit.api.text import TextStream
    from gptkit.core.tokenizer import encode

    ids = encode("naïve café")
    stream = TextStream(stop_strings=["é!"])
    out = "".join(stream.update(ids[: i + 1], False) for i in range(len(ids)))
    assert "\ufffd" not in out
    assert out == "naïve caf"  # "é" may still become "é!"
    assert stream.update(ids, True) == "é"


def test_one_prompt_in_every_row_is_prefilled_once_with_the_batch_results():
    """Beam search's rows share one prompt: the decoder prefills it once and
    copies its cache slots; logits and every row's cache equal a batched
    prefill's, and so do the next step's logits."""
    from gptkit.core.generate import Decoder

    torch.manual_seed(0)
    model = tiny_model().eval()
    prompt = [5, 9, 2, 7]
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    with torch.inference_mode():
        shared = Decoder(model, [prompt] * 3, 4)
        got = shared.prefill()
        batched = Decoder(model, [prompt] * 3, 4)
        want = model(batched.ids, cache=batched.cache)[:, -1:]  # a batched prefill
        assert calls == [1, 3]
        torch.testing.assert_close(got, want)
        assert shared.cache.lengths == batched.cache.lengths == [4, 4, 4]
        torch.testing.assert_close(shared.cache.keys, batched.cache.keys)
        torch.testing.assert_close(shared.cache.values, batched.cache.values)
        step = torch.tensor([3, 1, 4])
        torch.testing.assert_close(
            shared.step(step), model(step[:, None], cache=batched.cache)
        )


def test_rows_of_one_prompt_get_logits_of_their_own():
    """The one-prompt prefill's logits are each row's own (writable), so the
    padded vocabulary's mask and the samplers' in-place steps work on them."""
    from gptkit.plugins.samplers.beam import BeamSearch

    torch.manual_seed(0)
    model = tiny_model().eval()
    limit = model.cfg.vocab_size - 7
    prompt = [5, 9, 2, 7]
    for sampler in (BeamSearch(num_beams=3), TopK(top_k=5)):
        rows = [prompt] if isinstance(sampler, BeamSearch) else [prompt] * 3
        got = generate_tokens(
            model, rows, sampler, max_new_tokens=4, eos_id=None, vocab_limit=limit,
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
        assert got and all(t < limit for g in got for t in g.new_ids)


@pytest.mark.parametrize("length_penalty", [-1e308, -2.0, 1e308])
def test_beam_hypotheses_beat_empty_slots_even_at_minus_infinity(length_penalty):
    """An extreme length penalty sends a hypothesis's score to -inf; it is
    still a hypothesis (as in transformers), never beaten by an empty slot or
    replaced by an unfinished candidate: every returned sequence runs to the
    length limit."""
    from gptkit.plugins.samplers.beam import BeamSearch

    torch.manual_seed(0)
    model = tiny_model().eval()
    beam = BeamSearch(
        num_beams=3, num_return_sequences=3, length_penalty=length_penalty
    )
    got = generate_tokens(model, [[5, 9, 2]], beam, max_new_tokens=4, eos_id=None)
    assert len(got) == 3
    assert all(len(r.new_ids) == 4 and r.finish_reason == "length" for r in got)
