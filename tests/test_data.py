import pytest
import torch

from gptkit.core.data import EpochSampler, TokenWindows, load_corpora, make_loaders
from gptkit.errors import GptkitError


def test_book_split_and_windows(verdict_text):
    data = make_loaders(verdict_text, context_length=256, batch_size=2, seed=123)
    assert data.characters == 20479
    assert data.total_tokens == 5146  # split in two parts, tokenized separately
    assert (data.train_tokens, data.val_tokens) == (4608, 512)
    assert len(data.train_loader) == 9 and len(data.val_loader) == 1
    x, y = next(iter(data.train_loader))
    assert x.shape == y.shape == (2, 256)


def test_windows_follow_gptdatasetv1():
    ids = torch.arange(20)
    windows = TokenWindows(ids, context_length=4, stride=3)
    assert [int(windows[i][0][0]) for i in range(len(windows))] == [0, 3, 6, 9, 12, 15]
    x, y = windows[1]
    assert x.tolist() == [3, 4, 5, 6] and y.tolist() == [4, 5, 6, 7]


def test_training_order_is_a_seeded_function_of_the_epoch():
    a, b = (
        EpochSampler(50, shuffle=True, seed=1),
        EpochSampler(50, shuffle=True, seed=1),
    )
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    b.set_epoch(3, start=10)
    assert list(b) == list(a)[10:]
    shards = [
        EpochSampler(50, shuffle=True, seed=1, rank=r, world_size=2) for r in (0, 1)
    ]
    for s in shards:
        s.set_epoch(3)
    assert sorted(list(shards[0]) + list(shards[1])) == list(range(50))


def test_validation_keeps_the_last_partial_batch(verdict_text):
    data = make_loaders(verdict_text, context_length=64, batch_size=3, seed=1)
    val_windows = len(data.val_loader.dataset)
    assert sum(x.shape[0] for x, _ in data.val_loader) == val_windows
    assert all(x.shape[0] == 3 for x, _ in data.train_loader)


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        (
            "short text " * 5,
            {"context_length": 256},
            "corpus too short: the training part",
        ),
        ("word " * 400, {"context_length": 32, "batch_size": 64}, "make no full batch"),
        ("word " * 400, {"context_length": 8, "train_ratio": 1.0}, "train_ratio"),
    ],
)
def test_too_little_data_is_a_clear_error(text, kwargs, message):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(GptkitError, match=message):
        make_loaders(text, **kwargs)


def test_corpora_from_names_and_paths(tmp_path, verdict_path):
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta", encoding="utf-8")
    text, _ = load_corpora([str(tmp_path)])
    assert text == "alpha<|endoftext|>beta"
    text, _ = load_corpora([str(tmp_path / "*.txt")])
    assert text == "alpha"
    text, prompt = load_corpora(["the-verdict"])
    assert text == verdict_path.read_text(encoding="utf-8")
    assert prompt == "Every effort moves you"
    text, prompt = load_corpora(["python-docs"])
    assert len(text) > 400_000 and prompt


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "corpus file not found"), (b"", "empty"), (b"\xff\xfe bad", "not UTF-8")],
)
def test_bad_corpus_files(tmp_path, content, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GptkitError, match=message):
        load_corpora([str(path)])
