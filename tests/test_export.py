"""gptkit export --format hf: transformers loads the folder and computes the same
logits; the head stays tied or untied; nothing is ever overwritten."""

from __future__ import annotations

import json

import pytest
import torch

from gptkit.core.checkpoints.native import save_checkpoint
from gptkit.core.loading import model_from_spec
from tests.conftest import assert_clean_error
from tests.helpers import tiny_model


def export(cli_run, spec: str, out, *extra: str):
    result = cli_run("export", "--weights", spec, "--format", "hf", str(out), *extra)
    assert result.exit_code == 0, result.stderr
    return result


def transformers_model(path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(path).eval()


def max_diff(ours, theirs, vocab: int = 50257) -> float:
    ids = torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((ours(ids) - theirs(ids).logits).abs().max())


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("qkv_bias", [True, False], ids=["qkv-bias", "no-qkv-bias"])
def test_round_trip_through_transformers(tmp_path, cli_run, tie, qkv_bias):
    model = tiny_model(seed=1, tie_embeddings=tie, qkv_bias=qkv_bias)
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints", 5, model, model.cfg)
    export(cli_run, str(ckpt), tmp_path / "out")

    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is tie
    hf = transformers_model(tmp_path / "out")
    shared = hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    assert shared is tie  # transformers honours tie_word_embeddings false
    if not qkv_bias:
        assert not hf.transformer.h[0].attn.c_attn.bias.any()
    assert max_diff(model, hf) <= 1e-4

    # ... and back: the hf loader reproduces the gptkit weights bit for bit.
    again, loaded = model_from_spec(f"hf:{tmp_path / 'out'}")
    assert loaded.config.tie_embeddings is tie
    original = model.state_dict()
    for key, value in again.state_dict().items():
        if (
            key.endswith(("W_query.bias", "W_key.bias", "W_value.bias"))
            and not qkv_bias
        ):
            assert not value.any()
        else:
            assert torch.equal(value, original[key]), key


def test_the_tokenizer_comes_along(tmp_path, cli_run):
    from transformers import AutoTokenizer

    from gptkit.core.tokenizer import encode

    model = tiny_model()
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, model.cfg)
    export(cli_run, str(tmp_path / "run"), tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "Every effort moves you<|endoftext|>  def f(x):\n\treturn x"
    assert tokenizer(text)["input_ids"] == encode(text)


def test_dtype_cast_on_export(tmp_path, cli_run):
    from safetensors import safe_open

    model = tiny_model()
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, model.cfg)
    export(cli_run, str(tmp_path / "run"), tmp_path / "out", "--dtype", "bf16")
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"


def test_an_existing_empty_directory_is_fine(tmp_path, cli_run):
    model = tiny_model()
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, model.cfg)
    (tmp_path / "out").mkdir()
    export(cli_run, str(tmp_path / "run"), tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_a_non_empty_directory_is_never_overwritten(tmp_path, cli_run):
    model = tiny_model()
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, model.cfg)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = cli_run(
        "export", "--weights", str(tmp_path / "run"), str(tmp_path / "out")
    )
    assert_clean_error(result, "exists and is not empty")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    result = cli_run(
        "export", "--weights", str(tmp_path / "run"), str(tmp_path / "file")
    )
    assert_clean_error(result, "is not a directory")


def test_a_failed_write_leaves_nothing(tmp_path, cli_run, monkeypatch):
    import safetensors.torch

    model = tiny_model()
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, model, model.cfg)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    out = tmp_path / "exports" / "out"
    result = cli_run("export", "--weights", str(tmp_path / "run"), str(out))
    assert_clean_error(result, "cannot write", "no space left on device")
    assert list((tmp_path / "exports").iterdir()) == []  # no OUT_DIR, no temp dir


def test_bad_weights_write_nothing(tmp_path, cli_run):
    result = cli_run(
        "export", "--weights", str(tmp_path / "none"), str(tmp_path / "out")
    )
    assert_clean_error(result, "weights not found")
    assert not (tmp_path / "out").exists()
