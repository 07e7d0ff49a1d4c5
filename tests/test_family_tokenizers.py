"""A checkpoint's own tokenizer (tokenizer.json through the ``tokenizers``
library): ids identical to transformers.AutoTokenizer, special tokens
included; generation stops on the checkpoint's end-of-sequence ids; a
checkpoint without its tokenizer is one line."""

from __future__ import annotations

import json

import pytest
import torch

import gptkit
from gptkit.errors import GptkitError
from gptkit.formats.hf_tokenizer import HFTokenizer
from tests.conftest import train_byte_bpe

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
TEXTS = [
    "Every effort moves you",
    "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow.",
    "a<|eot_id|>b <|end_of_text|>  déjà vu 123\n\ttabs",
    "",
]


def build_tokenizer(path, verdict_text: str):
    """A byte-level BPE with Llama 3's special tokens: BOS added to every
    encoding by the post-processor, as Llama 3's tokenizer.json does."""
    from tokenizers import processors

    tok = train_byte_bpe(verdict_text[:20000], SPECIALS, 400)
    bos = tok.token_to_id(SPECIALS[0])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A", special_tokens=[(SPECIALS[0], bos)]
    )
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": SPECIALS[0],
                "eos_token": SPECIALS[1],
            }
        )
    )
    return tok


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, verdict_path):
    """A tiny LlamaForCausalLM with its tokenizer in one directory."""
    path = tmp_path_factory.mktemp("llama-tok") / "m"
    tok = build_tokenizer(path, verdict_path.read_text(encoding="utf-8"))
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tok.token_to_id(SPECIALS[0]),
        eos_token_id=tok.token_to_id(SPECIALS[1]),
    )
    transformers.LlamaForCausalLM(cfg).eval().save_pretrained(path)
    return path


def test_ids_equal_autotokenizer(checkpoint):
    theirs = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    ours = HFTokenizer(checkpoint / "tokenizer.json")
    for text in TEXTS:
        assert ours.encode(text) == theirs(text)["input_ids"], text
        ids = ours.encode(text)
        assert ours.decode(ids) == theirs.decode(ids)
    # special tokens written in the text are single ids
    eot = ours.backend.token_to_id("<|eot_id|>")
    assert eot in ours.encode("a<|eot_id|>b")
    assert ours.bos_id == ours.encode("x")[0]


def test_eos_ids_come_from_the_checkpoint(checkpoint, tmp_path):
    ours = HFTokenizer(checkpoint / "tokenizer.json")
    eos = ours.backend.token_to_id(SPECIALS[1])
    assert ours.eos_ids == (eos,)  # config.json's eos_token_id
    assert ours.separator == SPECIALS[1]


def test_generation_uses_the_checkpoint_tokenizer_and_stops_at_eos(
    checkpoint, tmp_path
):
    """gptkit.load(dir) takes the directory's tokenizer; greedy text equals
    transformers' generate decoded by AutoTokenizer; generation stops on any of
    generation_config.json's end-of-sequence ids."""
    import shutil

    model_dir = tmp_path / "m"
    shutil.copytree(checkpoint, model_dir)
    prompt = "Every effort moves you"
    hf = transformers.LlamaForCausalLM.from_pretrained(str(model_dir)).eval()
    auto = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    ids = auto(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        free = hf.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None)
    new = free[0, ids.shape[1] :].tolist()
    # End-of-sequence: the 6th generated token (and an id never produced).
    stop_at = new[5]
    never = next(i for i in range(400) if i not in new)
    (model_dir / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [never, stop_at]})
    )
    lm = gptkit.load(str(model_dir), device="cpu")
    assert isinstance(lm.tokenizer, HFTokenizer)
    assert lm.encode(prompt) == ids[0].tolist()
    [result] = lm.complete(prompt, max_new_tokens=12)
    first = new.index(stop_at)
    assert result.new_ids == new[: first + 1]
    assert result.finish_reason == "eos"
    assert result.completion == auto.decode(new[:first])
    # streamed pieces add up to the same text
    assert "".join(lm.stream(prompt, max_new_tokens=12)) == result.completion


def test_missing_tokenizer_json_is_one_line(checkpoint, tmp_path):
    import shutil

    model_dir = tmp_path / "m"
    shutil.copytree(checkpoint, model_dir)
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(GptkitError) as err:
        gptkit.load(str(model_dir), device="cpu")
    assert "has no tokenizer.json" in str(err.value)
    assert "name one with tokenizer" in str(err.value) and "\n" not in str(err.value)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(checkpoint):
    with pytest.raises(GptkitError, match=r"50,257 ids.*vocabulary of 512"):
        gptkit.load(str(checkpoint), device="cpu", tokenizer="gpt2")


# -- hf:org/repo: the Hugging Face cache, offline, as a real download left it ---

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture
def cached_qwen_tokenizer(tmp_path, hf_hub_cache, verdict_text):
    """``Qwen/Qwen3-0.6B``'s tokenizer files, built here (a byte-level BPE with
    Qwen3's special tokens, no BOS), in the Hub cache's layout: blobs,
    ``snapshots/<commit>/`` links and ``refs/main``; the Hub offline."""
    from tests.conftest import put_in_hub_cache

    tok = train_byte_bpe(verdict_text[:20000], QWEN_SPECIALS, 300)
    files = tmp_path / "qwen-files"
    files.mkdir()
    tok.save(str(files / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>"}
    (files / "tokenizer_config.json").write_text(json.dumps(config))
    eos = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    (files / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    snapshot = put_in_hub_cache(hf_hub_cache, "Qwen/Qwen3-0.6B", files)
    return tok, snapshot


def test_hf_spec_reads_the_hub_cache_offline(cached_qwen_tokenizer):
    """``hf:Qwen/Qwen3-0.6B`` goes through ``hf_hub_download`` (the path of a
    real download) and finds the cached snapshot: AutoTokenizer's ids, the
    end-of-sequence ids of generation_config.json; a pinned revision too."""
    from gptkit.formats.tokenizers import load_tokenizer
    from tests.conftest import HUB_COMMIT

    ours = load_tokenizer("hf:Qwen/Qwen3-0.6B")
    assert isinstance(ours, HFTokenizer) and ours.spec == "hf:Qwen/Qwen3-0.6B"
    tok, snapshot = cached_qwen_tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(str(snapshot))
    for text in [*TEXTS, "<|im_start|>user\nhi<|im_end|>\n"]:
        assert ours.encode(text) == theirs(text)["input_ids"], text
    im_end, endoftext = (tok.token_to_id(t) for t in QWEN_SPECIALS[2::-2])
    assert ours.eos_ids == (im_end, endoftext)
    pinned = load_tokenizer(f"hf:Qwen/Qwen3-0.6B@{HUB_COMMIT}")
    assert pinned.encode(TEXTS[1]) == ours.encode(TEXTS[1])


def test_hf_spec_trains_and_generates_from_the_cache(
    cached_qwen_tokenizer, tmp_path, verdict_path, cli_run
):
    """A new qwen3 model trained with ``--tokenizer hf:Qwen/Qwen3-0.6B`` in a
    fresh process (HF_HUB_CACHE and HF_HUB_OFFLINE read from the environment):
    its vocabulary is the tokenizer's, the run records the spec, and
    ``generate --weights RUN`` uses it again."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable, "-m", "gptkit", "train", "--preset", "qwen3-tiny",
            "--tokenizer", "hf:Qwen/Qwen3-0.6B", "--corpus", str(verdict_path),
            "--context-length", "16", "--batch-size", "2", "--max-steps", "2",
            "--eval-freq", "2", "--eval-iter", "1", "--max-new-tokens", "0",
            "--logger", "jsonl", "--out", str(run),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["tokenizer"] == "hf:Qwen/Qwen3-0.6B"
    tok, _ = cached_qwen_tokenizer
    assert config["model"]["vocab_size"] == tok.get_vocab_size()
    result = cli_run(
        "generate", "--weights", str(run), "--max-new-tokens", "3", "<|im_start|>"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<|im_start|>")


def test_hf_spec_not_in_the_cache_offline_is_one_line(hf_hub_cache, cli_run, tmp_path):
    from tests.conftest import assert_clean_error

    assert_clean_error(
        cli_run(
            "prepare", str(tmp_path), "--tokenizer", "hf:nobody/nothing",
            "--out", str(tmp_path / "out"),
        ),
        "no tokenizer.json for hf:nobody/nothing",
    )  # fmt: skip
