"""Every feature on tiny random Llama 3 and Qwen3 models: training from scratch,
generation with every sampler (batched, streamed, stop strings), quantization,
speculative decoding (a draft must share the tokenizer), eval, export back to
transformers, serving; faults in one line."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import assert_clean_error
from tests.test_family_tokenizers import SPECIALS, build_tokenizer

transformers = pytest.importorskip("transformers")

PROMPT = "Every effort moves you"


def _hf_checkpoint(path, verdict_text, family: str, seed: int = 0, layers: int = 2):
    """A random transformers model of ``family`` with a tokenizer.json of its
    own, in one directory (what a Hub snapshot holds)."""
    tok = build_tokenizer(path, verdict_text)
    torch.manual_seed(seed)
    common = {
        "vocab_size": 448,  # the tokenizer's 400 ids, padded
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "bos_token_id": tok.token_to_id(SPECIALS[0]),
        "eos_token_id": tok.token_to_id(SPECIALS[1]),
    }
    if family == "llama":
        cfg = transformers.LlamaConfig(
            **common,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            tie_word_embeddings=True,
        )
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3Config(**common, head_dim=32)
        model = transformers.Qwen3ForCausalLM(cfg)
    model.eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def checkpoint(request, tmp_path_factory, verdict_path):
    path = tmp_path_factory.mktemp(request.param) / "m"
    return _hf_checkpoint(path, verdict_path.read_text(encoding="utf-8"), request.param)


def _generate(cli_run, weights, *args):
    result = cli_run(
        "generate", "--weights", str(weights), "--device", "cpu", "--json", *args
    )
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def test_every_sampler_batched(cli_run, checkpoint):
    for sampler in (
        ["--sampler", "greedy"],
        ["--sampler", "top-k", "--top-k", "5", "--seed", "1"],
        ["--sampler", "top-p", "--top-p", "0.9", "--seed", "1"],
        ["--sampler", "min-p", "-o", "min_p=0.1", "--seed", "1"],
        ["--num-beams", "3"],
    ):
        out = _generate(
            cli_run, checkpoint, PROMPT, "I HAD", "--max-new-tokens", "6", *sampler
        )
        rows = out if isinstance(out, list) else out["results"]
        assert len(rows) == 2, sampler
        assert all(0 < len(r["token_ids"]) <= 6 for r in rows)


def test_streamed_text_equals_the_generated_text(cli_run, checkpoint):
    plain = _generate(cli_run, checkpoint, PROMPT, "--max-new-tokens", "10")
    rows = plain if isinstance(plain, list) else plain["results"]
    streamed = cli_run(
        "generate", "--weights", str(checkpoint), "--device", "cpu", "--stream",
        "--max-new-tokens", "10", PROMPT,
    )  # fmt: skip
    assert streamed.exit_code == 0, streamed.stderr
    assert rows[0]["completion"] in streamed.stdout


def test_stop_strings_cut_the_text(checkpoint):
    import gptkit

    lm = gptkit.load(str(checkpoint), device="cpu")
    text = lm.generate(PROMPT, max_new_tokens=20)
    assert len(text) > 3
    stop = text[2:4]
    [result] = lm.complete(PROMPT, max_new_tokens=20, stop=[stop])
    assert result.finish_reason == "stop"
    assert stop not in result.completion
    assert text.startswith(result.completion)


def test_quantized_generation(cli_run, checkpoint):
    full = _generate(cli_run, checkpoint, PROMPT, "--max-new-tokens", "5")
    for scheme in ("int8", "int4:group_size=32"):
        out = _generate(
            cli_run, checkpoint, PROMPT, "--max-new-tokens", "5", "--quantize", scheme
        )
        rows = out if isinstance(out, list) else out["results"]
        assert len(rows[0]["token_ids"]) == 5
    assert full


def test_quantized_logits_stay_close(checkpoint):
    from gptkit.core.quantize import quantize_model
    from gptkit.formats.models import model_from_spec

    model, _ = model_from_spec(str(checkpoint))
    ids = torch.tensor([[1, 5, 9, 44, 300, 7]])
    with torch.no_grad():
        ref = model(ids)
        quantize_model(model, "int8")
        assert (model(ids) - ref).abs().max() < 0.05 * ref.abs().max()
        assert not any(type(m) is torch.nn.Linear for m in model.modules())


def test_speculative_with_a_draft_sharing_the_tokenizer(
    cli_run, checkpoint, tmp_path, verdict_path
):
    """A one-layer draft of the same family and tokenizer: greedy speculative
    output is token-identical to the model's greedy output."""
    family = json.loads((checkpoint / "config.json").read_text())["model_type"]
    draft = _hf_checkpoint(
        tmp_path / "draft", verdict_path.read_text(), family, seed=5, layers=1
    )
    greedy = _generate(cli_run, checkpoint, PROMPT, "--max-new-tokens", "12")
    spec = _generate(
        cli_run, checkpoint, PROMPT, "--max-new-tokens", "12",
        "--sampler", "speculative", "-o", f"draft={draft}", "-o", "k=3",
    )  # fmt: skip
    rows = [r if isinstance(r, list) else r["results"] for r in (greedy, spec)]
    assert rows[0][0]["token_ids"] == rows[1][0]["token_ids"]


def test_speculative_draft_with_another_vocabulary_is_refused(
    cli_run, checkpoint, tmp_path
):
    from gptkit.core.checkpoints.native import save_checkpoint
    from gptkit.core.config import get_preset
    from gptkit.core.model import GPTModel

    cfg = get_preset("tiny")
    save_checkpoint(tmp_path / "gpt2" / "checkpoints", 1, GPTModel(cfg), cfg)
    result = cli_run(
        "generate", "--weights", str(checkpoint), "--device", "cpu",
        "--max-new-tokens", "4", "--sampler", "speculative",
        "-o", f"draft={tmp_path / 'gpt2'}", PROMPT,
    )  # fmt: skip
    assert_clean_error(result, "draft", "share one tokenizer")


def test_eval_and_export_round_trip(cli_run, checkpoint, tmp_path, verdict_path):
    result = cli_run(
        "eval", "--weights", str(checkpoint), "--device", "cpu",
        "--corpus", str(verdict_path), "--context-length", "64", "--eval-iter", "2",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    losses = json.loads(result.stdout)
    assert 5.0 < losses["val_loss"] < 7.0  # about ln(448): random weights

    out = tmp_path / "exported"
    result = cli_run(
        "export", "--weights", str(checkpoint), "--dtype", "bf16", str(out)
    )
    assert result.exit_code == 0, result.stderr
    assert (out / "tokenizer.json").is_file()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert theirs.dtype == torch.bfloat16
    original = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint))
    ids = torch.tensor([[1, 5, 9, 44, 300, 7]])
    with torch.no_grad():
        diff = theirs.float()(ids).logits - original.eval()(ids).logits
    assert diff.abs().max() < 0.1  # bf16 rounding of the weights only
    auto = transformers.AutoTokenizer.from_pretrained(str(out))
    assert auto(PROMPT)["input_ids"][0] == auto.bos_token_id


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_train_from_scratch_and_resume_generate(
    cli_run, tmp_path, verdict_path, family
):
    run = tmp_path / "run"
    result = cli_run(
        "train", "--arch", family, "--corpus", str(verdict_path),
        "--epochs", "1", "--max-steps", "8", "--eval-freq", "4", "--eval-iter", "1",
        "--batch-size", "4", "--lr", "3e-3", "--out", str(run),
        "--logger", "jsonl", "--device", "cpu", "--max-new-tokens", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == f"{family}-tiny"
    assert config["model"]["arch"] == family
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 1.0  # it learns
    out = _generate(cli_run, run, PROMPT, "--max-new-tokens", "4")
    assert out


def test_train_with_a_checkpoint_tokenizer(cli_run, tmp_path, verdict_path, checkpoint):
    """--tokenizer: a new model's vocabulary is the tokenizer's; the run records
    it, and generation from the run uses it."""
    run = tmp_path / "run"
    result = cli_run(
        "train", "--preset", "qwen3-tiny", "--tokenizer", str(checkpoint),
        "--corpus", str(verdict_path), "--epochs", "1", "--max-steps", "2",
        "--eval-freq", "2", "--eval-iter", "1", "--batch-size", "2",
        "--out", str(run), "--logger", "jsonl", "--device", "cpu",
        "--max-new-tokens", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["vocab_size"] == 400
    assert config["tokenizer"] == str((checkpoint / "tokenizer.json").resolve())
    import gptkit

    lm = gptkit.load(str(run), device="cpu")
    assert lm.tokenizer.fingerprint().startswith("tokenizer.json:")
    assert lm.encode(PROMPT)[0] == lm.tokenizer.bos_id


def test_faults_are_one_line(cli_run, tmp_path):
    assert_clean_error(
        cli_run("train", "--arch", "mamba"),
        "--arch",
        "'mamba'",
        "gpt2, llama, qwen3",
    )
    assert_clean_error(
        cli_run("train", "--arch", "llama", "--preset", "qwen3-tiny"),
        "qwen3-tiny is a qwen3 preset, not llama",
    )
    assert_clean_error(
        cli_run("train", "--preset", "llama-tiny", "--tokenizer", str(tmp_path)),
        "tokenizer not found",
    )


@pytest.mark.slow
def test_served_completions_equal_generate(cli_run, checkpoint):
    """gptkit serve on a Llama 3 / Qwen3 checkpoint: its tokenizer, continuous
    batching, streaming; a greedy completion equals gptkit generate's."""
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    from tests.serve_harness import MODEL_NAME, ServerProcess

    expected = _generate(cli_run, checkpoint, PROMPT, "--max-new-tokens", "12")
    [row] = expected["results"]
    server = ServerProcess(checkpoint, "--max-batch-size", "4")
    try:
        client = server.client()
        response = client.completions.create(
            model=MODEL_NAME, prompt=[PROMPT, PROMPT], max_tokens=12, temperature=0
        )
        assert [c.text for c in response.choices] == [row["completion"]] * 2
        assert response.usage.prompt_tokens == 2 * len(row["prompt_ids"])
        pieces = client.completions.create(
            model=MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0, stream=True
        )
        assert "".join(c.choices[0].text for c in pieces) == row["completion"]
    finally:
        assert server.stop() == 0, server.log()


def test_prepare_with_a_checkpoint_tokenizer_and_train_on_it(
    cli_run, checkpoint, tmp_path, verdict_path
):
    """gptkit prepare --tokenizer writes the tokenizer's ids (documents ended
    by its end-of-sequence id); a run on the prepared corpus takes that
    tokenizer, and a run with another one is refused in one line."""
    import numpy as np

    from gptkit.core.token_files import open_tokens, read_meta
    from gptkit.formats.hf_tokenizer import HFTokenizer

    out = tmp_path / "prepared"
    result = cli_run(
        "prepare", str(verdict_path), "--out", str(out), "--tokenizer",
        str(checkpoint), "--workers", "1", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    meta = read_meta(out)
    tok = HFTokenizer(checkpoint / "tokenizer.json")
    assert meta["tokenizer"] == tok.spec and meta["dtype"] == "uint16"
    assert meta["eot_token"] == tok.eos_id
    text = verdict_path.read_text(encoding="utf-8")
    expected = tok.backend.encode(text, add_special_tokens=False).ids
    assert np.array_equal(np.asarray(open_tokens(out, meta)), np.asarray(expected))

    run = tmp_path / "run"
    trained = cli_run(
        "train", "--preset", "qwen3-tiny", "--data", str(out), "--epochs", "1",
        "--max-steps", "2", "--eval-freq", "2", "--eval-iter", "1",
        "--batch-size", "2", "--out", str(run), "--logger", "jsonl",
        "--device", "cpu", "--max-new-tokens", "2",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.stderr
    assert json.loads((run / "config.json").read_text())["tokenizer"] == tok.spec
    assert_clean_error(
        cli_run(
            "train",
            "--preset",
            "tiny",
            "--data",
            str(out),
            "--tokenizer",
            "gpt2",
            "--out",
            str(tmp_path / "other"),
        ),
        "was prepared with tokenizer",
    )


def test_wide_vocabularies_are_stored_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from gptkit.core.token_files import open_tokens, read_meta
    from gptkit.formats.prepared import prepare

    words = {f"w{i}": i for i in range(70_000)}
    words["<eos>"] = 70_000
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "tokenizer_config.json").write_text('{"eos_token": "<eos>"}')
    (tmp_path / "a.txt").write_text(" ".join(f"w{i}" for i in range(69_990, 70_000)))
    (tmp_path / "b.txt").write_text("w1 w2 w65537")
    meta = prepare(
        [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
        tmp_path / "out",
        tokenizer=str(tmp_path / "tok"),
        progress=False,
        message=lambda _: None,
    )
    assert meta["dtype"] == "uint32"
    ids = open_tokens(tmp_path / "out", read_meta(tmp_path / "out")).tolist()
    assert ids == [*range(69_990, 70_000), 70_000, 1, 2, 65_537]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("preset", ["llama-tiny", "qwen3-tiny"])
def test_compiled_greedy_equals_eager(preset):
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("Inductor on the CPU needs a C++ compiler")
    from gptkit.core.config import get_preset
    from gptkit.core.generate import generate_tokens
    from gptkit.core.registry import get_registry
    from gptkit.core.weights import build_model

    torch.manual_seed(0)
    cfg = get_preset(preset).replace(vocab_size=512, context_length=32)
    model = build_model(cfg).eval()
    greedy = get_registry().samplers.create("greedy")
    prompts = [[1, 2, 3, 4], [5, 6]]
    eager = generate_tokens(model, prompts, greedy, max_new_tokens=12, eos_id=None)
    compiled = generate_tokens(
        model, prompts, greedy, max_new_tokens=12, eos_id=None, compiled=True
    )
    assert [r.new_ids for r in compiled] == [r.new_ids for r in eager]
