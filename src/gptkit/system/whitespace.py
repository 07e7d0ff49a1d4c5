"""Long whitespace runs cut out of a text before GPT-2's pre-tokenisation.

tiktoken's regex (``\\s+(?!\\S)``, a backtracking look-ahead) fails on a
whitespace run of some hundred thousand characters ("Regex error ... Max stack
size exceeded"). Such a run is a pre-token of its own, so it can be cut out and
handed to the byte-pair encoder directly: before a non-space character the
regex makes the run less its last character one piece (the last one starts the
next piece: " word"), at the end of the text or of a segment (before a special
token) the whole run. Everything else goes through tiktoken unchanged, so the
ids are tiktoken's (tests/test_tokenizer.py checks it with the threshold at 2).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

# Unicode's White_Space property: what ``\s`` means in tiktoken's (Rust) regex.
# Python's own ``\s`` differs (it also matches U+001C..U+001F), so it is spelt out.
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: Whitespace runs at least this long are cut out.
LONG_WHITESPACE = 4096


@functools.cache
def _runs(length: int) -> re.Pattern[str]:
    return re.compile(f"[{WHITESPACE}]{{{length},}}")


def segments(text: str, special: str = "") -> Iterator[tuple[bool, str]]:
    """``text`` as (is_piece, part) pairs: pieces are long whitespace runs to
    byte-pair encode as they are, other parts go through the regex; their
    encodings, joined, are the whole text's. ``special``: a special token
    (``<|endoftext|>``), which ends a segment of the regex."""
    if len(text) < LONG_WHITESPACE:
        yield False, text
        return
    start = 0
    for match in _runs(LONG_WHITESPACE).finditer(text):
        begin, end = match.span()
        if end < len(text) and not (special and text.startswith(special, end)):
            end -= 1  # the last space joins the next piece
        if begin > start:
            yield False, text[start:begin]
        yield True, text[begin:end]
        start = end
    if start < len(text) or start == 0:
        yield False, text[start:]


def encode(encoding: Any, text: str, special: str) -> list[int]:
    """``encoding.encode(text, allowed_special={special})`` (a tiktoken
    encoding) for a text with whitespace runs of any length."""
    ids: list[int] = []
    for is_piece, part in segments(text, special):
        if is_piece:
            ids += encoding._encode_single_piece(part)
        else:
            ids += encoding.encode(part, allowed_special={special})
    return ids
