"""Generation identical to transformers on the same weights (loaded through the
Hugging Face loader), and the key/value cache identical to recomputation."""

from __future__ import annotations

import json

import pytest
import torch

from gptkit.core.generate import generate_tokens
from gptkit.formats.models import model_from_spec
from gptkit.plugins.samplers.beam import BeamSearch
from gptkit.plugins.samplers.token import Greedy
from tests.conftest import assert_beam4_sweep_equals_transformers, assert_clean_error
from tests.helpers import greedy_without_cache, tiny_model

transformers = pytest.importorskip("transformers")

PROMPTS = [
    [464, 329, 318, 257],
    [40, 1101, 257, 1303, 290, 314, 588, 284, 1561],
    [1549],
]


def make_pair(tmp_path, **config):
    """A random GPT2LMHeadModel saved with save_pretrained, and gptkit's copy."""
    torch.manual_seed(0)
    base = {"n_positions": 128, "bos_token_id": None, "eos_token_id": None}
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**{**base, **config})
    ).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours, _ = model_from_spec(f"hf:{tmp_path / 'hf'}")
    return hf, ours.eval()


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("tiny"), n_embd=64, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def small_vocab_pair(tmp_path_factory):
    """Parity needs no real vocabulary: 2,000 ids keep the test fast."""
    return make_pair(
        tmp_path_factory.mktemp("small"),
        n_embd=64,
        n_layer=2,
        n_head=4,
        vocab_size=2000,
    )


def hf_greedy(hf, prompts, n):
    """transformers' greedy decoding of a left-padded batch."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), 0)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.inference_mode():
        out = hf.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
    return out[:, width:].tolist()


def check_greedy(hf, ours, n=50):
    for prompt in PROMPTS:
        [expected] = hf_greedy(hf, [prompt], n)
        got = generate_tokens(ours, [prompt], Greedy(), max_new_tokens=n, eos_id=None)
        assert got[0].new_ids == expected
    batch = generate_tokens(ours, PROMPTS, Greedy(), max_new_tokens=n, eos_id=None)
    assert [r.new_ids for r in batch] == hf_greedy(hf, PROMPTS, n)


def check_beam(hf, ours, n=20):
    prompt = PROMPTS[0]
    plain = generate_tokens(
        ours, [prompt], BeamSearch(num_beams=4), max_new_tokens=n, eos_id=None
    )
    # An end-of-text id that beam search does finish with: the first token of
    # the best beam whose choice as end-of-text ends some returned hypothesis.
    beam4 = BeamSearch(num_beams=4, num_return_sequences=4, length_penalty=0.6)
    eos = next(
        t
        for t in plain[0].new_ids[1:8]
        if any(
            r.finish_reason == "eos"
            for r in generate_tokens(ours, [prompt], beam4, max_new_tokens=n, eos_id=t)
        )
    )
    assert_beam4_sweep_equals_transformers(hf, ours, prompt, n, eos)


def test_logits_equal_transformers(tiny_pair):
    hf, ours = tiny_pair
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() < 1e-4


def test_greedy_equals_transformers_single_and_batched(small_vocab_pair):
    check_greedy(*small_vocab_pair)


def test_beam_search_equals_transformers(small_vocab_pair):
    check_beam(*small_vocab_pair)


@pytest.mark.slow
def test_124m_shaped_model_equals_transformers(tmp_path):
    hf, ours = make_pair(tmp_path, n_positions=1024)
    check_greedy(hf, ours, n=50)
    check_beam(hf, ours, n=12)


def test_cache_equals_recomputation_while_the_window_slides():
    model = tiny_model(context_length=256, emb_dim=32, n_heads=2, vocab_size=1000)
    prompt = [464, 329, 318, 257, 282, 11]
    out = generate_tokens(model, [prompt], Greedy(), max_new_tokens=300, eos_id=None)
    assert out[0].new_ids == greedy_without_cache(model, prompt, 300)


@pytest.fixture(scope="module")
def hf_dir(tiny_pair, tmp_path_factory):
    hf, _ = tiny_pair
    path = tmp_path_factory.mktemp("hfdir") / "m"
    hf.save_pretrained(path)
    return path


def test_cli_stream_json_and_stdin(cli_run, hf_dir):
    spec = f"hf:{hf_dir}"
    plain = cli_run(
        "generate", "--weights", spec, "Every effort moves you", "--max-new-tokens", "8"
    )
    streamed = cli_run(
        "generate",
        "--weights",
        spec,
        "Every effort moves you",
        "--max-new-tokens",
        "8",
        "--stream",
    )
    assert plain.exit_code == streamed.exit_code == 0, plain.stderr + streamed.stderr
    assert plain.output == streamed.output
    top_p_batch = (
        *("generate", "--weights", spec, "-", "--json", "--max-new-tokens", "8"),
        *("--sampler", "top-p", "-o", "top_p=0.9", "-o", "temperature=0.8"),
        *("--seed", "3"),
    )
    batch = cli_run(*top_p_batch, input="The list\nA dictionary is\n")
    data = json.loads(batch.output)
    assert data["sampler"] == "top-p"
    assert [r["prompt"] for r in data["results"]] == ["The list", "A dictionary is"]
    assert all(
        len(r["token_ids"]) <= 8 and r["text"].startswith(r["prompt"])
        for r in data["results"]
    )
    again = cli_run(*top_p_batch, input="The list\nA dictionary is\n")
    assert again.output == batch.output  # --seed makes sampling reproducible
    beams = cli_run(
        "generate",
        "--weights",
        spec,
        "Hello",
        "--num-beams",
        "3",
        "--json",
        "-o",
        "num_return_sequences=2",
        "--max-new-tokens",
        "5",
    )
    results = json.loads(beams.output)["results"]
    assert len(results) == 2 and results[0]["score"] >= results[1]["score"]


def test_cli_bad_generation_input(cli_run, hf_dir):
    spec = f"hf:{hf_dir}"
    assert_clean_error(
        cli_run("generate", "--weights", spec, "x", "--sampler", "nope"),
        "unknown sampler 'nope'",
    )
    assert_clean_error(
        cli_run(
            "generate", "--weights", spec, "x", "--sampler", "top-p", "-o", "top_p=1.5"
        ),
        "top_p",
    )
    assert_clean_error(
        cli_run("generate", "--weights", spec, "x", "--num-beams", "2", "--stream"),
        "--stream",
    )
    long_prompt = "word " * 200  # 200 tokens > context 128
    assert_clean_error(
        cli_run("generate", "--weights", spec, long_prompt, "--no-truncate"),
        "more than the context length 128",
    )
    empty = cli_run(
        "generate", "--weights", spec, "", "--json", "--max-new-tokens", "2"
    )
    assert json.loads(empty.output)["results"][0]["prompt_ids"] == [50256]
