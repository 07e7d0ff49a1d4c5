"""Shared fixtures. Tests run with strict plugins, offline, with gptkit's cache in
a temporary directory seeded with the book's text (so ``--corpus the-verdict``
works without a download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import hypothesis
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"
SHARED_INSTRUCTIONS = REPO.parent / "shared" / "data" / "instruction-data.json"

os.environ["GPTKIT_STRICT_PLUGINS"] = "1"

# `pytest --hypothesis-profile=long`: the property tests run many more examples
# (tests/test_fuzz_settings.py scales its counts when this profile is loaded).
hypothesis.settings.register_profile("long", max_examples=2000, deadline=None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def verdict_path() -> Path:
    if not SHARED_VERDICT.is_file():
        pytest.skip(f"the book's text is not at {SHARED_VERDICT}")
    return SHARED_VERDICT


@pytest.fixture(scope="session")
def verdict_text(verdict_path: Path) -> str:
    return verdict_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def base_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A tiny model saved as the book saves one (model.pth) and the first 40 of
    the book's instructions: the weights spec and the data file (LoRA, QLoRA)."""
    import json

    import torch

    from gptkit.core.config import get_preset
    from gptkit.core.model import GPTModel

    if not SHARED_INSTRUCTIONS.is_file():
        pytest.skip(f"the book's instruction data is not at {SHARED_INSTRUCTIONS}")
    root = tmp_path_factory.mktemp("base")
    torch.manual_seed(1)
    model = GPTModel(get_preset("tiny").replace(context_length=256))
    torch.save(model.state_dict(), root / "model.pth")
    data = root / "small.json"
    data.write_text(json.dumps(json.loads(SHARED_INSTRUCTIONS.read_text())[:40]))
    return f"book:{root / 'model.pth'}", data


@pytest.fixture(autouse=True, scope="session")
def gptkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("gptkit-cache")
    os.environ["GPTKIT_CACHE_DIR"] = str(cache)
    if SHARED_VERDICT.is_file():
        (cache / "corpora").mkdir()
        shutil.copy(SHARED_VERDICT, cache / "corpora" / "the-verdict.txt")
    return cache


@pytest.fixture(autouse=True)
def _fresh_registry():
    from gptkit.core.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def cli_run():
    """Run ``gptkit`` in-process; returns click's Result (stdout/stderr apart)."""
    from click.testing import CliRunner

    from gptkit.cli.main import cli

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return run


def assert_clean_error(result, *fragments: str) -> None:
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gptkit: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -- the network and the Hugging Face Hub -------------------------------------


def _network_unavailable() -> str | None:
    """Why ``network`` tests cannot run here, or None when they can."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False"):
        return "offline (HF_HUB_OFFLINE is set; HF_HUB_OFFLINE=0 runs network tests)"
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as exc:
        return f"huggingface.co is unreachable ({exc})"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip tests marked ``network`` when offline."""
    if item.get_closest_marker("network") is not None:
        reason = _network_unavailable()
        if reason:
            pytest.skip(reason)


@pytest.fixture
def hf_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face Hub cache, used offline: ``hf_hub_download`` (the
    code path of a real download) finds files only here. huggingface_hub reads
    its environment at import time, so its constants are patched too; the
    environment is set for subprocesses."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(
    cache: Path,
    repo_id: str,
    model_dir: Path,
    *,
    commit: str = HUB_COMMIT,
    refs: tuple[str, ...] = ("main",),
) -> Path:
    """Lay out ``model_dir``'s files as the Hub cache stores a download:
    ``models--org--name/blobs/<sha256>``, ``snapshots/<commit>/<file>`` links to
    the blobs, and ``refs/<branch>`` holding the commit. Returns the snapshot."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(model_dir.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def save_transformers_gpt2(
    path: Path, *, layout: str = "save_pretrained", seed: int = 0, **config
):
    """A random ``transformers`` GPT-2 saved to ``path`` (safetensors) in one of
    the two key layouts; returns the model (eval mode).

    ``save_pretrained``: ``GPT2LMHeadModel.save_pretrained`` (``transformer.``
    prefixed keys, ``lm_head.weight`` when untied). ``hub``: the layout of
    ``openai-community/gpt2``'s ``model.safetensors``: ``GPT2Model`` keys with
    no prefix, no ``lm_head.weight``, and ``h.N.attn.bias`` mask buffers.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    settings = dict(n_embd=32, n_layer=2, n_head=4, n_positions=32, vocab_size=101)
    settings.update(config)
    if settings["vocab_size"] <= 50256:  # GPT-2's <|endoftext|> is not in it
        settings.setdefault("bos_token_id", 0)
        settings.setdefault("eos_token_id", 0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**settings)).eval()
    with torch.no_grad():  # non-trivial biases and norms, so mapping bugs show
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.normal_(0, 0.1).add_(1.0 if name.endswith("weight") else 0.0)
        if not model.config.tie_word_embeddings:
            model.lm_head.weight.normal_(0, 0.02)
    if layout == "save_pretrained":
        model.save_pretrained(path)
    elif layout == "hub":
        assert model.config.tie_word_embeddings, "the Hub layout has no lm_head"
        path.mkdir(parents=True)
        n = model.config.n_positions
        mask = torch.tril(torch.ones(n, n)).view(1, 1, n, n)  # (1, 1, n, n)
        tensors = {k: v.contiguous() for k, v in model.transformer.state_dict().items()}
        for i in range(model.config.n_layer):
            tensors[f"h.{i}.attn.bias"] = mask.clone()
        save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
        model.config.to_json_file(path / "config.json")
    else:
        raise ValueError(layout)
    return model


@pytest.fixture
def one_torch_thread():
    """Tiny models: one torch thread for the test (OpenMP threads waiting for a
    busy core of a shared machine make each small operation ~10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_beam4_sweep_equals_transformers(hf, ours, prompt, n: int, eos) -> list:
    """Beam search with 4 beams returning all 4, with length penalty 1.0 and
    0.6, early stopping off and on: gptkit's ids, padding (the first
    end-of-sequence id) and scores equal transformers' (``eos``: an id or a
    tuple of ids). Returns gptkit's results of every combination."""
    import torch

    from gptkit.core.generate import generate_tokens
    from gptkit.plugins.samplers.beam import BeamSearch

    ids = torch.tensor([prompt])
    several = isinstance(eos, tuple)
    pad = eos[0] if several else eos
    results = []
    for lp in (1.0, 0.6):
        for early in (False, True):
            out = hf_beam4(
                hf, ids, n, length_penalty=lp, early_stopping=early,
                eos_token_id=list(eos) if several else eos, pad_token_id=pad,
            )  # fmt: skip
            beam = BeamSearch(
                num_beams=4,
                length_penalty=lp,
                early_stopping=str(early).lower(),
                num_return_sequences=4,
            )
            got = generate_tokens(ours, [prompt], beam, max_new_tokens=n, eos_id=eos)
            assert len(got) == 4
            for i, r in enumerate(got):
                theirs = out.sequences[i, len(prompt) :].tolist()
                assert theirs[: len(r.new_ids)] == r.new_ids, (lp, early, i)
                assert all(t == pad for t in theirs[len(r.new_ids) :])  # padding
                assert r.score == pytest.approx(
                    float(out.sequences_scores[i]), abs=1e-4
                )
            results += got
    return results


def hf_beam4(hf, ids, max_new_tokens: int, *, length_penalty=1.0, early_stopping=False,
             eos_token_id=None, pad_token_id=0):  # fmt: skip
    """transformers' beam search with 4 beams returning all 4 (the reference the
    beam parity tests compare with): the generate output with scores."""
    import torch

    extra = {} if eos_token_id is None else {"eos_token_id": eos_token_id}
    with torch.inference_mode():
        return hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            num_beams=4,
            num_return_sequences=4,
            do_sample=False,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
            pad_token_id=pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
            **extra,
        )


def train_byte_bpe(text: str, specials: list[str], vocab_size: int):
    """A byte-level BPE (``tokenizers``) trained on ``text`` with these special
    tokens, as Llama 3's and Qwen3's tokenizer.json are built."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    return tok
