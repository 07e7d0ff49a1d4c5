from gptkit.core.tokenizer import EOT_ID, N_VOCAB, decode, encode, get_tokenizer

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
