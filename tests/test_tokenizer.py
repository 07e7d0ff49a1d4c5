import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptkit.core.tokenizer import EOT_ID, N_VOCAB, decode, encode, get_tokenizer
from gptkit.formats.prepared import _encode_array
from gptkit.system import whitespace

BOOK_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
BOOK_IDS = [
    15496,
    11,
    466,
    345,
    588,
    8887,
    30,
    220,
    50256,
    554,
    262,
    4252,
    18250,
    8812,
    2114,
]


def test_book_example_encodes_to_the_books_ids():
    assert encode(BOOK_TEXT) == BOOK_IDS
    assert decode(BOOK_IDS) == BOOK_TEXT


def test_vocabulary_and_end_of_text():
    enc = get_tokenizer()
    assert enc.n_vocab == N_VOCAB == 50257
    assert enc.eot_token == EOT_ID == 50256
    assert enc.name == "gpt2"


def test_unknown_words_split_into_subwords():
    ids = encode("Akwirw ier")
    assert ids == [33901, 86, 343, 86, 220, 959]  # the book's chapter 2 example
    assert decode(ids) == "Akwirw ier"


# -- long whitespace runs (issue 22, fault 5) -----------------------------------


@pytest.mark.parametrize("space", [" ", "\n", " \n", "\u3000", "\t\r"])
@pytest.mark.parametrize("where", ["alone", "inside", "end", "before-eot"])
def test_a_million_whitespace_characters_encode(space, where):
    run = space * (1_000_000 // len(space))
    text = {
        "alone": run,
        "inside": "Hello" + run + "world",
        "end": "Hello" + run,
        "before-eot": "Hello" + run + "<|endoftext|> x",
    }[where]
    ids = encode(text)  # tiktoken alone: "Regex error ... Max stack size exceeded"
    assert decode(ids) == text
    assert max(ids) < N_VOCAB


# Characters the regex treats specially around whitespace, and the ones Python's
# \s matches but Unicode's White_Space (tiktoken's \s) does not (U+001C..U+001F).
_ALPHABET = st.sampled_from(
    [*" \n\t\r\x0b\x0c\x85\xa0\u3000\u2028\x1c\x1faZ9!'s.", "<|endoftext|>"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_cutting_out_whitespace_runs_keeps_tiktokens_ids(text):
    """With the cut-out threshold at 2 characters, every whitespace run takes
    the new path: the ids must still be exactly tiktoken's."""
    reference = get_tokenizer().encode(text, allowed_special={"<|endoftext|>"})
    saved = whitespace.LONG_WHITESPACE
    whitespace.LONG_WHITESPACE = 2
    try:
        assert encode(text) == reference
        assert _encode_array(text).tolist() == reference
    finally:
        whitespace.LONG_WHITESPACE = saved
