"""The book: loader: state dicts saved by the book's code load exactly, the
config comes from the shapes, and a malicious pickle never runs."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from gptkit.core.checkpoints.native import save_checkpoint
from gptkit.core.loading import model_from_spec
from gptkit.core.weights import load_weights, split_spec
from gptkit.errors import GptkitError
from gptkit.plugins.loaders.book import default_heads
from tests.conftest import assert_clean_error
from tests.helpers import tiny_model


def book_state_dict(model, mask_dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The keys the book's GPTModel writes: gptkit's names plus each block's
    causal-mask buffer (chapter 3: ``torch.triu(torch.ones(ctx, ctx), 1)``)."""
    ctx = model.cfg.context_length
    state = {}
    for key, value in model.state_dict().items():
        state[key] = value.clone()
        if key.endswith("att.W_query.weight"):
            mask = torch.triu(torch.ones(ctx, ctx), diagonal=1).to(mask_dtype)
            state[key.replace("W_query.weight", "mask")] = mask  # (ctx, ctx)
    return state


def logits(model, vocab: int = 50257) -> torch.Tensor:
    ids = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(ids)


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bool])
def test_model_pth_reproduces_the_saved_logits(tmp_path, qkv_bias, mask_dtype):
    model = tiny_model(seed=2, qkv_bias=qkv_bias)  # 32 wide, 4 heads
    torch.save(book_state_dict(model, mask_dtype), tmp_path / "model.pth")
    loaded_model, loaded = model_from_spec(
        f"book:{tmp_path / 'model.pth'}", hints={"n_heads": 4}
    )
    cfg = loaded.config
    assert (cfg.emb_dim, cfg.n_layers, cfg.context_length, cfg.vocab_size) == (
        32,
        2,
        32,
        50257,
    )
    assert cfg.qkv_bias is qkv_bias and not cfg.tie_embeddings
    assert torch.equal(logits(loaded_model), logits(model))


def test_model_and_optimizer_pth(tmp_path):
    model = tiny_model(seed=3).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    torch.save(
        {
            "model_state_dict": book_state_dict(model),
            "optimizer_state_dict": optimizer.state_dict(),
        },
        tmp_path / "model_and_optimizer.pth",
    )
    spec = str(tmp_path / "model_and_optimizer.pth")  # a bare .pth path: book
    assert split_spec(spec) == ("book", spec)
    loaded_model, loaded = model_from_spec(spec, hints={"n_heads": 4})
    assert torch.equal(logits(loaded_model), logits(model))
    saved = optimizer.state_dict()
    restored = loaded.extra["optimizer_state"]
    assert restored["param_groups"] == saved["param_groups"]
    assert torch.equal(restored["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])
    # it fits an optimizer over the loaded model (what resuming will do)
    torch.optim.AdamW(loaded_model.parameters()).load_state_dict(restored)


def test_wrapped_models_prefixes_are_removed(tmp_path):
    model = tiny_model(seed=4)
    state = {f"_orig_mod.module.{k}": v for k, v in book_state_dict(model).items()}
    torch.save(state, tmp_path / "model.pth")
    loaded_model, _ = model_from_spec(
        f"book:{tmp_path / 'model.pth'}", hints={"n_heads": 4}
    )
    assert torch.equal(logits(loaded_model), logits(model))


def test_heads_come_from_gpt2s_table_or_the_user():
    assert [default_heads(d) for d in (768, 1024, 1280, 1600, 256, 64)] == [
        12,
        16,
        20,
        25,
        4,
        1,
    ]
    with pytest.raises(GptkitError, match="--n-heads"):
        default_heads(200)  # 200 // 64 = 3 does not divide 200


def test_n_heads_and_preset_reach_the_loader(tmp_path, cli_run):
    """A mini-shaped file (128 wide: 2 heads by the table, 4 in the preset)."""
    model = tiny_model(seed=5, emb_dim=128, n_layers=4, n_heads=4)
    path = tmp_path / "model.pth"
    torch.save(book_state_dict(model), path)
    assert load_weights(f"book:{path}").config.n_heads == 2
    assert load_weights(f"book:{path}", {"preset": "mini"}).config.n_heads == 4
    assert load_weights(f"book:{path}", {"n_heads": 8}).config.n_heads == 8

    # gptkit eval: explicit --preset / --n-heads reach the loader, the default
    # preset does not; the native checkpoint of the same model is the reference.
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, model.cfg)
    common = ["--corpus", "the-verdict", "--eval-iter", "1", "--json"]

    def val_loss(*args: str) -> float:
        result = cli_run("eval", *args, *common)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["val_loss"]

    reference = val_loss("--weights", str(tmp_path / "run"))
    assert val_loss("--weights", f"book:{path}", "--preset", "mini") == reference
    assert val_loss("--weights", f"book:{path}", "--n-heads", "4") == reference
    assert val_loss("--weights", f"book:{path}") != reference  # 2 heads

    result = cli_run(
        "export", "--weights", f"book:{path}", "--n-heads", "4", str(tmp_path / "hf")
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["n_head"] == 4


def test_a_preset_that_does_not_fit_the_file(tmp_path, cli_run):
    torch.save(book_state_dict(tiny_model()), tmp_path / "model.pth")
    result = cli_run(
        "eval", "--weights", f"book:{tmp_path / 'model.pth'}", "--preset", "gpt2-124m"
    )
    assert_clean_error(result, "--preset gpt2-124m is 12 layers x 768 wide", "2 x 32")


class _Exploit:
    """Unpickling this calls open(target, "w"): it creates a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_malicious_pth_never_runs(tmp_path, cli_run, writer):
    state = book_state_dict(tiny_model())

    def write(path, target):
        payload = {**state, "trf_blocks.0.att.mask": _Exploit(str(target))}
        if writer == "torch.save":
            torch.save(payload, path)
        else:
            with open(path, "wb") as f:
                pickle.dump(payload, f)

    # Control: the file is really malicious -- an unsafe load runs the payload.
    write(tmp_path / "control.pth", tmp_path / "control-pwned")
    if writer == "torch.save":
        torch.load(tmp_path / "control.pth", weights_only=False)
    else:
        with open(tmp_path / "control.pth", "rb") as f:
            pickle.load(f)
    assert (tmp_path / "control-pwned").exists()

    write(tmp_path / "model.pth", tmp_path / "pwned")
    for command in (["eval"], ["export", str(tmp_path / "out")]):
        result = cli_run(*command, "--weights", f"book:{tmp_path / 'model.pth'}")
        assert_clean_error(result, "refusing to load", "cannot run code")
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("truncated", "corrupt or unreadable"),
        ("garbage", "corrupt or unreadable"),
        ("list", "holds no state dict"),
        ("no-embeddings", "not a state dict of the book's GPTModel"),
        ("missing-tensor", "weights lack tensor trf_blocks.1.ff.layers.2.bias"),
        ("bad-shape", "tensor trf_blocks.0.att.W_key.weight has shape (32, 31)"),
        ("not-a-tensor", "entry step is not a tensor"),
    ],
)
def test_bad_pth_files(tmp_path, cli_run, content, fragment):
    path = tmp_path / "model.pth"
    state = book_state_dict(tiny_model())
    if content == "truncated":
        torch.save(state, path)
        path.write_bytes(path.read_bytes()[:1000])
    elif content == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    elif content == "no-embeddings":
        torch.save({"weight": torch.zeros(2)}, path)
    elif content == "missing-tensor":
        del state["trf_blocks.1.ff.layers.2.bias"]
        torch.save(state, path)
    elif content == "bad-shape":
        state["trf_blocks.0.att.W_key.weight"] = torch.zeros(32, 31)
        torch.save(state, path)
    else:
        torch.save({**state, "step": 3}, path)
    result = cli_run(
        "export", "--weights", f"book:{path}", "--n-heads", "4", str(tmp_path / "out")
    )
    assert_clean_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_a_missing_file(tmp_path, cli_run):
    result = cli_run("eval", "--weights", f"book:{tmp_path / 'nope.pth'}")
    assert_clean_error(result, "nope.pth: not found")
