"""Llama 3 and Qwen3 beside GPT-2: tiny random models written in Hugging Face
format by transformers (LlamaForCausalLM, Qwen3ForCausalLM) and loaded through
the Hub loader's code path give transformers' logits, greedy and beam ids; the
key/value cache equals recomputation; Llama 3.1's RoPE scaling holds past the
original context."""

from __future__ import annotations

import json

import pytest
import torch

from gptkit.core.generate import generate_tokens
from gptkit.core.model import KVCache
from gptkit.errors import GptkitError
from gptkit.formats.models import model_from_spec
from gptkit.plugins.samplers.beam import BeamSearch
from gptkit.plugins.samplers.token import Greedy
from tests.conftest import (
    HUB_COMMIT,
    assert_beam4_sweep_equals_transformers,
    hf_beam4,
    put_in_hub_cache,
)

transformers = pytest.importorskip("transformers")

VOCAB = 512
PROMPTS = [[5, 17, 300, 42], [7, 8, 9, 10, 11, 12, 13, 14, 15], [99]]
#: Llama 3.1 scaling over a short original context, so that positions past it
#: are cheap to reach.
LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


def hf_config(family: str, **changes):
    base = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
    if family == "llama":
        base.update(
            rope_theta=500000.0, rope_scaling=LLAMA3_SCALING, tie_word_embeddings=True
        )
        return transformers.LlamaConfig(**{**base, **changes})
    base.update(head_dim=32, rope_theta=1000000.0, tie_word_embeddings=False)
    return transformers.Qwen3Config(**{**base, **changes})


def make_pair(path, family: str, dtype=torch.float32, **changes):
    """A random transformers model saved with save_pretrained, and gptkit's copy
    loaded from that directory through the hf: loader."""
    torch.manual_seed(0)
    cls = (
        transformers.LlamaForCausalLM
        if family == "llama"
        else transformers.Qwen3ForCausalLM
    )
    hf = cls(hf_config(family, **changes)).eval()
    # Random norms too: an all-ones RMSNorm weight would hide a misplaced one.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    hf = hf.to(dtype)
    hf.save_pretrained(path)
    ours, _ = model_from_spec(f"hf:{path}")
    return hf, ours.eval()


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def pair(request, tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp(request.param), request.param)


def test_logits_equal_transformers(pair):
    hf, ours = pair
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() < 1e-4


def test_long_positions_past_the_original_context(pair):
    """Llama 3.1's scaled frequencies (and Qwen3's plain RoPE) at positions up
    to 200, far past the 32-token original context of the scaling."""
    hf, ours = pair
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 200))
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() < 1e-4


def test_the_config_says_what_was_loaded(pair):
    _, ours = pair
    cfg = ours.cfg
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.n_layers) == (4, 2, 2)
    if cfg.arch == "llama":
        assert cfg.rope_factor == 8.0 and cfg.rope_original_context == 32
        assert cfg.tie_embeddings and cfg.head_dim == 16
    else:
        assert cfg.qk_norm and cfg.head_dim == 32 and not cfg.tie_embeddings


def hf_greedy(hf, prompts, n):
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.inference_mode():
        out = hf.generate(
            ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return out[:, width:].tolist()


def test_greedy_ids_equal_transformers(pair):
    hf, ours = pair
    n = 30
    for prompt in PROMPTS:
        [expected] = hf_greedy(hf, [prompt], n)
        got = generate_tokens(ours, [prompt], Greedy(), max_new_tokens=n, eos_id=None)
        assert got[0].new_ids == expected
    batch = generate_tokens(ours, PROMPTS, Greedy(), max_new_tokens=n, eos_id=None)
    assert [r.new_ids for r in batch] == hf_greedy(hf, PROMPTS, n)


def test_beam4_ids_equal_transformers(pair):
    hf, ours = pair
    n = 15
    prompt = PROMPTS[0]
    ids = torch.tensor([prompt])
    out = hf_beam4(hf, ids, n)
    beam = BeamSearch(num_beams=4, num_return_sequences=4, length_penalty=1.0)
    got = generate_tokens(ours, [prompt], beam, max_new_tokens=n, eos_id=None)
    assert len(got) == 4
    for i, r in enumerate(got):
        assert out.sequences[i, len(prompt) :].tolist() == r.new_ids
        assert r.score == pytest.approx(float(out.sequences_scores[i]), abs=1e-4)


def two_eos_ids(ours, prompt: list[int], n: int) -> tuple[int, int]:
    """Two end-of-sequence ids (as Llama 3 instruct stops on <|eot_id|> and
    <|end_of_text|>, Qwen3 on <|im_end|> and <|endoftext|>) that each end one
    of the four hypotheses beam search returns: the first such pair among the
    likeliest first tokens."""
    with torch.no_grad():
        top = ours(torch.tensor([prompt]))[0, -1].topk(12).indices.tolist()
    beam = BeamSearch(num_beams=4, num_return_sequences=4, length_penalty=0.6)
    for i, a in enumerate(top[1:], 1):
        for b in top[i + 1 :]:
            got = generate_tokens(ours, [prompt], beam, max_new_tokens=n, eos_id=(a, b))
            if {r.new_ids[-1] for r in got if r.finish_reason == "eos"} == {a, b}:
                return a, b
    raise AssertionError("no pair of ids ends two hypotheses")


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_beam4_with_two_eos_ids_equals_transformers(pair, prompt):
    """Beam search stops a hypothesis on either end-of-sequence id: ids and
    scores identical to ``generate(num_beams=4, eos_token_id=[a, b])``, with
    and without length penalty and early stopping."""
    hf, ours = pair
    n = 12
    a, b = two_eos_ids(ours, prompt, n)
    results = assert_beam4_sweep_equals_transformers(hf, ours, prompt, n, (a, b))
    ended = {r.new_ids[-1] for r in results if r.finish_reason == "eos"}
    assert ended == {a, b}


def test_cached_decode_equals_uncached_forward(pair):
    """Prefill, then one token at a time from the cache (grouped key/value
    heads stored once per group): each step's logits equal a full forward."""
    _, ours = pair
    torch.manual_seed(2)
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        full = ours(ids)
        cache = KVCache.allocate(ours.cfg, 2, 40, "cpu", torch.float32)
        assert cache.keys.shape[3] == ours.cfg.n_kv_heads
        steps = [ours(ids[:, :10], cache=cache)]
        for t in range(10, 40):
            steps.append(ours(ids[:, t : t + 1], cache=cache))
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-4


def test_bf16_checkpoint_stays_bf16(tmp_path):
    hf, _ = make_pair(tmp_path / "m", "qwen3", dtype=torch.bfloat16)
    ours, _ = model_from_spec(f"hf:{tmp_path / 'm'}")
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        diff = (hf(ids).logits.float() - ours(ids).float()).abs().max()
    assert diff < 0.05  # the same bf16 arithmetic, up to kernel order
    as_fp32, _ = model_from_spec(f"hf:{tmp_path / 'm'}", dtype=torch.float32)
    assert {p.dtype for p in as_fp32.parameters()} == {torch.float32}


def test_sharded_checkpoint_loads(tmp_path):
    hf, _ = make_pair(tmp_path / "one", "llama")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ours, _ = model_from_spec(str(tmp_path / "sharded"))  # a bare path works too
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() < 1e-4


def test_from_the_hub_cache(tmp_path, hf_hub_cache):
    """hf:org/repo through huggingface_hub's cache, offline."""
    hf, _ = make_pair(tmp_path / "m", "llama")
    put_in_hub_cache(hf_hub_cache, "meta-llama/Llama-3.2-tiny", tmp_path / "m")
    ours, loaded = model_from_spec("hf:meta-llama/Llama-3.2-tiny")
    assert loaded.source == f"hf:meta-llama/Llama-3.2-tiny@{HUB_COMMIT}"
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() < 1e-4


# -- faults ---------------------------------------------------------------------


def _write_config(path, **data):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(data))


def test_unknown_family_lists_the_known_ones(tmp_path):
    _write_config(tmp_path / "m", model_type="mamba", hidden_size=8)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    with pytest.raises(GptkitError) as err:
        model_from_spec(f"hf:{tmp_path / 'm'}")
    message = str(err.value)
    assert "'mamba'" in message and "gpt2, llama, qwen3" in message
    assert "register_architectures" in message and "\n" not in message


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"num_attention_heads": 4, "num_key_value_heads": 3}, "not a multiple"),
        ({"hidden_size": 66, "num_attention_heads": 4}, "not divisible"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "'yarn'"),
    ],
)
def test_contradictory_config_is_one_line(tmp_path, changes, fragment):
    data = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 1,
        "intermediate_size": 32,
        "vocab_size": 16,
        **changes,
    }
    _write_config(tmp_path / "m", **data)
    with pytest.raises(GptkitError, match=fragment) as err:
        model_from_spec(f"hf:{tmp_path / 'm'}")
    assert "\n" not in str(err.value)


def test_weights_that_contradict_the_config(tmp_path):
    make_pair(tmp_path / "m", "llama")
    data = json.loads((tmp_path / "m" / "config.json").read_text())
    data["intermediate_size"] = 128
    (tmp_path / "m" / "config.json").write_text(json.dumps(data))
    with pytest.raises(
        GptkitError, match=r"has shape .* expected .* \(contradictory shapes\)"
    ):
        model_from_spec(f"hf:{tmp_path / 'm'}")
