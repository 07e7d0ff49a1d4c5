"""The hf: loader: GPT-2 in transformers format from a directory or the Hub cache
gives transformers' logits, in both key layouts; bad input is one clear line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptkit.core.loading import model_from_spec
from gptkit.core.weights import load_weights
from gptkit.errors import GptkitError, SettingError
from gptkit.plugins.loaders.hub import parse_hub_name
from tests.conftest import (
    HUB_COMMIT,
    assert_clean_error,
    put_in_hub_cache,
    save_transformers_gpt2,
)

LAYOUTS = ["save_pretrained", "hub"]


def max_logit_diff(reference, spec: str, ids: torch.Tensor, **kwargs) -> float:
    """Max |logits| difference of gptkit's model from ``spec`` vs transformers."""
    model, _ = model_from_spec(spec, **kwargs)
    with torch.no_grad():
        ours = model.eval()(ids)
        theirs = reference(ids).logits
    return float((ours.float() - theirs).abs().max())


def ids_for(vocab: int, length: int = 20) -> torch.Tensor:
    return torch.randint(
        0, vocab, (2, length), generator=torch.Generator().manual_seed(1)
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_local_directory_gives_transformers_logits(tmp_path, layout):
    reference = save_transformers_gpt2(tmp_path / "m", layout=layout)
    assert max_logit_diff(reference, f"hf:{tmp_path / 'm'}", ids_for(101)) <= 1e-4
    cfg = load_weights(f"hf:{tmp_path / 'm'}").config
    assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads, cfg.context_length) == (
        32,
        2,
        4,
        32,
    )
    assert cfg.vocab_size == 101 and cfg.qkv_bias and cfg.tie_embeddings


def test_a_bare_path_to_a_transformers_directory_goes_to_hf(tmp_path):
    reference = save_transformers_gpt2(tmp_path / "m")
    assert max_logit_diff(reference, str(tmp_path / "m"), ids_for(101)) <= 1e-4


def test_a_head_count_that_contradicts_the_file(tmp_path, cli_run):
    save_transformers_gpt2(tmp_path / "m")
    spec = f"hf:{tmp_path / 'm'}"
    assert load_weights(spec, {"n_heads": 4}).config.n_heads == 4
    with pytest.raises(SettingError, match="preset mini does not match the weights"):
        load_weights(spec, {"preset": "mini"})
    result = cli_run("export", "--weights", spec, "--n-heads", "8", str(tmp_path / "o"))
    assert_clean_error(result, "--n-heads 8 does not match the weights", "n_heads 4")


def test_an_untied_head_stays_untied(tmp_path):
    reference = save_transformers_gpt2(tmp_path / "m", tie_word_embeddings=False)
    model, loaded = model_from_spec(f"hf:{tmp_path / 'm'}")
    assert not loaded.config.tie_embeddings
    assert model.out_head.weight is not model.tok_emb.weight
    assert max_logit_diff(reference, f"hf:{tmp_path / 'm'}", ids_for(101)) <= 1e-4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_hub_repo_loads_offline_from_the_cache(tmp_path, hf_hub_cache, layout):
    reference = save_transformers_gpt2(tmp_path / "m", layout=layout, seed=3)
    put_in_hub_cache(
        hf_hub_cache, "tiny-org/tiny-gpt2", tmp_path / "m", refs=("main", "v1")
    )
    ids = ids_for(101)
    for spec in (
        "hf:tiny-org/tiny-gpt2",
        f"hf:tiny-org/tiny-gpt2@{HUB_COMMIT}",
        "hf:tiny-org/tiny-gpt2@v1",
    ):
        assert max_logit_diff(reference, spec, ids) <= 1e-4, spec
    loaded = load_weights("hf:tiny-org/tiny-gpt2")
    assert loaded.source == f"hf:tiny-org/tiny-gpt2@{HUB_COMMIT}"
    assert loaded.extra["commit"] == HUB_COMMIT


def test_the_gpt2_aliases_name_openais_checkpoints(tmp_path, hf_hub_cache, monkeypatch):
    reference = save_transformers_gpt2(tmp_path / "m", layout="hub")
    put_in_hub_cache(hf_hub_cache, "openai-community/gpt2", tmp_path / "m")
    # the book's code downloads into ./gpt2/124M: the alias still means the Hub
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2" / "124M").mkdir(parents=True)
    assert max_logit_diff(reference, "hf:gpt2", ids_for(101)) <= 1e-4
    assert str(parse_hub_name("gpt2")) == "openai-community/gpt2"
    assert str(parse_hub_name("gpt2-xl@abc")) == "openai-community/gpt2-xl@abc"
    assert str(parse_hub_name("org/repo", "v2")) == "org/repo@v2"
    with pytest.raises(GptkitError, match="unknown GPT-2 name 'gpt3'"):
        parse_hub_name("gpt3")


def test_sharded_checkpoints_load_locally_and_from_the_hub(tmp_path, hf_hub_cache):
    reference = save_transformers_gpt2(tmp_path / "m")
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert max_logit_diff(reference, f"hf:{tmp_path / 'sharded'}", ids_for(101)) <= 1e-4
    put_in_hub_cache(hf_hub_cache, "tiny-org/sharded", tmp_path / "sharded")
    assert max_logit_diff(reference, "hf:tiny-org/sharded", ids_for(101)) <= 1e-4


def test_dtype_and_device_are_the_callers(tmp_path):
    reference = save_transformers_gpt2(tmp_path / "m")
    spec = f"hf:{tmp_path / 'm'}"
    model, _ = model_from_spec(spec, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    # bf16 keeps ~3 significant digits: close, not equal
    assert max_logit_diff(reference, spec, ids_for(101), dtype=torch.bfloat16) < 0.1
    if torch.cuda.is_available():
        diff = max_logit_diff(
            reference.cuda(), spec, ids_for(101).cuda(), device="cuda"
        )
        assert diff <= 1e-4


@pytest.mark.slow
def test_a_124m_shaped_model_matches_transformers(tmp_path, hf_hub_cache):
    reference = save_transformers_gpt2(
        tmp_path / "m",
        layout="hub",
        n_embd=768,
        n_layer=12,
        n_head=12,
        n_positions=1024,
        vocab_size=50257,
    )
    put_in_hub_cache(hf_hub_cache, "openai-community/gpt2", tmp_path / "m")
    ids = ids_for(50257, length=64)
    diff = max_logit_diff(reference, "hf:gpt2", ids)
    print(f"124M-shaped random GPT-2: max |logit diff| vs transformers = {diff:.3g}")
    assert diff <= 1e-4


def test_download_reports_the_cached_snapshot_in_a_subprocess(tmp_path, hf_hub_cache):
    """The real environment path: HF_HUB_CACHE / HF_HUB_OFFLINE read at import."""
    save_transformers_gpt2(tmp_path / "m")
    snapshot = put_in_hub_cache(hf_hub_cache, "tiny-org/tiny-gpt2", tmp_path / "m")
    proc = subprocess.run(
        [sys.executable, "-m", "gptkit", "download", "tiny-org/tiny-gpt2"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(snapshot)
    assert "2 layers, 32 wide" in proc.stdout


# -- bad input: one line, exit code 2, nothing written ---------------------------


def export_fails(cli_run, tmp_path: Path, spec: str, *fragments: str) -> None:
    out = tmp_path / "exported"
    assert_clean_error(
        cli_run("export", "--weights", spec, "--format", "hf", str(out)), *fragments
    )
    assert not out.exists()


def test_a_truncated_safetensors_file(tmp_path, cli_run):
    save_transformers_gpt2(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    export_fails(
        cli_run, tmp_path, f"hf:{tmp_path / 'm'}", "corrupt or unreadable safetensors"
    )


def test_a_garbage_safetensors_file(tmp_path, cli_run):
    save_transformers_gpt2(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......"
    )
    export_fails(
        cli_run, tmp_path, f"hf:{tmp_path / 'm'}", "corrupt or unreadable safetensors"
    )


def test_a_missing_config_json(tmp_path, cli_run):
    save_transformers_gpt2(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    export_fails(cli_run, tmp_path, f"hf:{tmp_path / 'm'}", "has no config.json")


def test_only_pickle_weights_are_refused(tmp_path, cli_run):
    save_transformers_gpt2(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    export_fails(
        cli_run,
        tmp_path,
        f"hf:{tmp_path / 'm'}",
        "no model.safetensors",
        "pytorch_model.bin",
    )


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
            ("'llama' model", "GPT-2"),
        ),
        ({"activation_function": "relu"}, ("activation_function 'relu'",)),
        ({"n_inner": 100}, ("n_inner 100",)),
        (
            {"vocab_size": 102},
            ("tensor transformer.wte.weight", "(101, 32)", "(102, 32)"),
        ),
        ({"n_layer": 3}, ("lacks tensor h.2.ln_1.weight",)),
        ({"n_layer": 1}, ("has tensor transformer.h.1.",)),
        ({"n_embd": 0}, ("n_embd must be a positive integer",)),
    ],
)
def test_a_config_that_does_not_fit(tmp_path, cli_run, changes, fragments):
    save_transformers_gpt2(tmp_path / "m")
    edit_config(tmp_path / "m", **changes)
    export_fails(cli_run, tmp_path, f"hf:{tmp_path / 'm'}", *fragments)


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path, cli_run):
    from safetensors.torch import load_file, save_file

    save_transformers_gpt2(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(weights)
    tensors["transformer.h.1.attn.c_attn.weight"] = torch.zeros(32, 95)
    save_file(tensors, weights, metadata={"format": "pt"})
    export_fails(
        cli_run,
        tmp_path,
        f"hf:{tmp_path / 'm'}",
        "tensor transformer.h.1.attn.c_attn.weight",
        "(32, 95)",
        "(32, 96)",
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("hf:gpt3", "unknown GPT-2 name 'gpt3'"),
        ("hf:", "hf: needs a model"),
        ("hf:bad repo/na me", "neither a Hub repository id"),
    ],
)
def test_an_unknown_name(tmp_path, cli_run, hf_hub_cache, spec, fragment):
    export_fails(cli_run, tmp_path, spec, fragment)


def test_a_missing_path(tmp_path, cli_run):
    export_fails(cli_run, tmp_path, f"hf:{tmp_path / 'nowhere'}", "not a directory")


def test_a_revision_missing_from_the_cache(tmp_path, cli_run, hf_hub_cache):
    save_transformers_gpt2(tmp_path / "m")
    put_in_hub_cache(hf_hub_cache, "tiny-org/tiny-gpt2", tmp_path / "m")
    export_fails(
        cli_run,
        tmp_path,
        "hf:tiny-org/tiny-gpt2@v9",
        "revision 'v9' of tiny-org/tiny-gpt2",
        "cached: main",
        "HF_HUB_OFFLINE",
    )
    export_fails(
        cli_run,
        tmp_path,
        "hf:tiny-org/tiny-gpt2@" + "f" * 40,
        "not in the Hugging Face cache",
    )


def test_offline_without_a_cached_copy(tmp_path, cli_run, hf_hub_cache):
    export_fails(
        cli_run,
        tmp_path,
        "hf:tiny-org/absent",
        "config.json of tiny-org/absent is not in the Hugging Face cache",
        "HF_HUB_OFFLINE is set",
        "gptkit download",
    )
    assert_clean_error(
        cli_run("download", "tiny-org/absent"), "not in the Hugging Face cache"
    )


def test_no_network_and_no_cache(tmp_path, cli_run, hf_hub_cache, monkeypatch):
    """Online mode, but the Hub refuses connections: the real HTTP code path."""
    import huggingface_hub.utils._http as hub_http
    from huggingface_hub import constants

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections refused
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        constants, "ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}"
    )
    monkeypatch.setattr(
        hub_http.time, "sleep", lambda seconds: None
    )  # no backoff waits
    try:
        export_fails(
            cli_run,
            tmp_path,
            "hf:tiny-org/absent",
            "not in the Hugging Face cache",
            "cannot be reached",
        )
    finally:
        closed.close()


def _hub_errors():
    from huggingface_hub import utils as errors

    try:
        import httpx2 as http
    except ImportError:  # older huggingface_hub
        import httpx as http
    url = "https://huggingface.co/org/name/resolve/main/config.json"

    def response(status: int):
        return http.Response(status, request=http.Request("HEAD", url))

    return [
        (
            errors.RepositoryNotFoundError("x", response=response(404)),
            "no model repository org/name",
        ),
        (errors.GatedRepoError("x", response=response(403)), "org/name is gated"),
        (
            errors.RevisionNotFoundError("x", response=response(404)),
            "has no revision 'main'",
        ),
        (errors.EntryNotFoundError("x"), "org/name has no file config.json"),
        (errors.HfHubHTTPError("server on fire", response=response(500)), "HTTP 500"),
        (errors.OfflineModeIsEnabled("x"), "HF_HUB_OFFLINE is set"),
        (OSError(28, "No space left on device"), "No space left on device"),
    ]


@pytest.mark.parametrize(
    ("error", "fragment"),
    _hub_errors(),
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_hub_errors_become_one_line(tmp_path, cli_run, monkeypatch, error, fragment):
    import huggingface_hub

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    export_fails(cli_run, tmp_path, "hf:org/name", fragment)
    assert_clean_error(cli_run("download", "org/name"), fragment)


def test_download_checks_the_architecture_before_the_weights(
    tmp_path, cli_run, hf_hub_cache
):
    save_transformers_gpt2(tmp_path / "m")
    edit_config(tmp_path / "m", model_type="llama")
    (tmp_path / "m" / "model.safetensors").unlink()  # a download would be attempted
    put_in_hub_cache(hf_hub_cache, "tiny-org/llama", tmp_path / "m")
    assert_clean_error(cli_run("download", "tiny-org/llama"), "'llama' model")


def test_download_revision_flag_conflicts(cli_run, hf_hub_cache):
    assert_clean_error(
        cli_run("download", "gpt2@v1", "--revision", "v2"), "--revision is 'v2'"
    )


@pytest.mark.network
def test_exercise_5_5_losses_of_openais_gpt2(cli_run, verdict_path):
    """The book's exercise 5.5: GPT-2 124M on "The Verdict" at context 256."""
    result = cli_run(
        "eval",
        "--weights",
        "hf:gpt2",
        "--corpus",
        "the-verdict",
        "--context-length",
        "256",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["train_loss"] == pytest.approx(3.7547, abs=5e-4)
    assert data["val_loss"] == pytest.approx(3.5596, abs=5e-4)
