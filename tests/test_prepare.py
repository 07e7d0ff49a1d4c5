"""``gptkit prepare`` and ``gptkit train --data``: the token file holds exactly
the ids of the joined documents, preparation is parallel and resumable, and
training streams windows from a memory map whatever its size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gptkit.core.data import TokenWindows, make_prepared_loaders
from gptkit.core.tokenizer import ENDOFTEXT, encode
from gptkit.formats import prepared


def tokens(directory: Path) -> list[int]:
    return np.fromfile(directory / "tokens.bin", dtype=np.uint16).tolist()


def quiet(message: str) -> None:
    pass


# Text with the characters GPT-2's pre-tokenizer treats specially: runs of
# spaces and newlines, \r\n, tabs, a non-breaking space, contractions, digits,
# punctuation, non-ASCII letters and the end-of-text marker.
PIECES = st.sampled_from(
    [" ", "  ", "\n", "\n\n", "\r\n", "\t", "\u00a0", "'s", "'ll", "word", "Word",
     "42", "!?", ".", "é", "日本", "🙂", ENDOFTEXT, "x\n", " \n "]
)  # fmt: skip
TEXTS = st.lists(PIECES, min_size=1, max_size=60).map("".join)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(docs=st.lists(TEXTS, min_size=1, max_size=3), shard=st.integers(1, 40))
def test_shards_tokenize_exactly_like_the_whole_text(tmp_path_factory, docs, shard):
    expected = encode(ENDOFTEXT.join(docs))
    assume(len(expected) >= 2)  # something to split into training and validation
    root = tmp_path_factory.mktemp("docs")
    paths = [root / f"{i}.txt" for i in range(len(docs))]
    for path, doc in zip(paths, docs, strict=True):
        path.write_bytes(doc.encode("utf-8"))
    meta = prepared.prepare(
        [str(p) for p in paths],
        root / "out",
        shard_bytes=shard,
        train_ratio=0.5,
        progress=False,
        message=quiet,
    )
    assert tokens(root / "out") == expected
    assert meta["documents"] == len(docs)


def test_prepare_command_parallel_with_metadata(cli_run, tmp_path, verdict_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("\ufeffA first document.\nWith two lines.\n")
    (corpus / "sub" / "b.txt").write_bytes(verdict_path.read_bytes())
    out = tmp_path / "prepared"
    result = cli_run(
        "prepare", str(corpus), "--out", str(out), "--workers", "2",
        "--shard-mb", "0.004", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert json.loads(result.stdout)["tokens"] == meta["tokens"]
    docs = ["A first document.\nWith two lines.\n", verdict_path.read_text()]
    expected = encode(ENDOFTEXT.join(docs))  # the --corpus path's ids
    assert tokens(out) == expected
    assert meta["tokens"] == len(expected) and meta["documents"] == 2
    assert meta["train_tokens"] == int(0.9 * len(expected))
    assert meta["val_tokens"] == len(expected) - meta["train_tokens"]
    assert [i["sha256"] for i in meta["inputs"]] == [
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (corpus / "a.txt", corpus / "sub" / "b.txt")
    ]
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokens.bin"]
    # Rerun: nothing to do, nothing changed.
    before = (out / "tokens.bin").stat().st_mtime_ns
    again = cli_run("prepare", str(corpus), "--out", str(out))
    assert again.exit_code == 0 and "already prepared" in again.stderr
    assert (out / "tokens.bin").stat().st_mtime_ns == before


def test_an_interrupted_preparation_resumes_where_it_stopped(
    tmp_path, monkeypatch, verdict_path
):
    real = prepared.tokenize_shard
    calls: list[int] = []

    def crash_after_three(shard, work):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(shard.index)
        return real(shard, work)

    monkeypatch.setattr(prepared, "tokenize_shard", crash_after_three)
    out = tmp_path / "out"
    kwargs = {"shard_bytes": 2000, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        prepared.prepare([str(verdict_path)], out, message=quiet, **kwargs)
    assert not (out / "meta.json").exists()
    monkeypatch.setattr(prepared, "tokenize_shard", real)
    counted: list[int] = []
    monkeypatch.setattr(
        prepared,
        "tokenize_shard",
        lambda shard, work: counted.append(shard.index) or real(shard, work),
    )
    messages: list[str] = []
    meta = prepared.prepare([str(verdict_path)], out, message=messages.append, **kwargs)
    n_shards = len(prepared.plan([str(verdict_path)], 2000)[1])
    assert messages == [f"resuming: 3 of {n_shards} shards already tokenized"]
    assert sorted(counted) == list(range(3, n_shards))
    assert tokens(out) == encode(verdict_path.read_text())
    assert meta["tokens"] == len(tokens(out))


def test_train_streams_windows_from_a_prepared_corpus(cli_run, tmp_path, verdict_path):
    out = tmp_path / "prepared"
    prepared.prepare([str(verdict_path)], out, progress=False, message=quiet)
    data = make_prepared_loaders(out, context_length=16, batch_size=2, stride=8)
    ids = np.fromfile(out / "tokens.bin", dtype=np.uint16).astype(np.int64)
    n_train = json.loads((out / "meta.json").read_text())["train_tokens"]
    reference = TokenWindows(torch.from_numpy(ids[:n_train]), 16, 8)
    streamed = data.train_loader.dataset
    assert len(streamed) == len(reference)
    for i in (0, 1, len(reference) - 1):
        (x, y), (rx, ry) = streamed[i], reference[i]
        assert torch.equal(x, rx) and torch.equal(y, ry)
    run = tmp_path / "run"
    result = cli_run(
        "train", "--data", str(out), "--preset", "tiny", "--context-length", "16",
        "--batch-size", "2", "--max-steps", "3", "--eval-freq", "1",
        "--eval-iter", "1", "--max-new-tokens", "2", "--logger", "jsonl",
        "--out", str(run),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["prepared"] and config["data"]["tokens"] == len(ids)
    assert config["settings"]["data"] == str(out)
    evals = [
        r for r in map(json.loads, (run / "metrics.jsonl").open()) if "val_loss" in r
    ]
    assert len(evals) == 3 and evals[-1]["train_loss"] < evals[0]["train_loss"]


def rss_mib() -> float:
    """This process's resident memory now (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux")
def test_memory_stays_bounded_whatever_the_corpus_size(tmp_path):
    """A corpus of 2**32 tokens (an 8 GiB sparse file): opening it and drawing
    shuffled batches reads a few pages, not the corpus, and builds no
    per-window index."""
    out = tmp_path / "huge"
    out.mkdir()
    n = 1 << 32
    with open(out / "tokens.bin", "wb") as f:
        f.truncate(2 * n)
    meta = {
        "format": "gptkit-tokens", "version": 1, "dtype": "uint16",
        "tokens_file": "tokens.bin", "tokens": n, "train_tokens": n - (1 << 20),
    }  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta))
    before = rss_mib()
    data = make_prepared_loaders(out, context_length=256, batch_size=4)
    batches = iter(data.train_loader)
    for _ in range(20):
        x, y = next(batches)
        assert x.shape == y.shape == (4, 256)
    next(iter(data.val_loader))
    grown_mib = rss_mib() - before
    assert len(data.train_loader) == len(range(0, n - (1 << 20) - 256, 256)) // 4
    assert grown_mib < 64, grown_mib


def test_prepare_help_imports_no_torch():
    from tests.test_cli import HEAVY, _modules_after_cli

    assert not HEAVY & _modules_after_cli("prepare", "--help")
