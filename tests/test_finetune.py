"""gptkit finetune: the book's chapter-7 numbers, the run it writes, the prompt
style it records (generate and chat apply it), resume, and one-line faults."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data" / "instruction-data.json"
# A tiny model that still reads the book's prompts: 2 layers, 64 wide, context 256.
TINY = ["--preset", "tiny", "--context-length", "256"]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    if not SHARED.is_file():
        pytest.skip(f"the book's instruction data is not at {SHARED}")
    return json.loads(SHARED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def small_data(records, tmp_path_factory) -> Path:
    """The first 40 records: 34 train, 4 test, 2 validation."""
    path = tmp_path_factory.mktemp("data") / "small.json"
    path.write_text(json.dumps(records[:40]))
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the book's numbers ------------------------------------------------------------

# Produced by running the book's own chapter-7 code (rasbt/LLMs-from-scratch at
# 28c65cdf, ch07/01_main-chapter-code: InstructionDataset, custom_collate_fn and
# format_input from gpt_instruction_finetuning.py; GPTModel, train_model_simple,
# generate, text_to_token_ids and token_ids_to_text from previous_chapters.py)
# exactly as its main() does, on torch 2.13 CPU with tiktoken's gpt2 encoding:
# the first 100 records of instruction-data.json, split 85/10/5; after
# torch.manual_seed(123), the loaders (batch 8, collate with
# allowed_max_length=1024, training shuffled with drop_last) and the book's
# GPTModel({"vocab_size": 50257, "context_length": 1024, "drop_rate": 0.0,
# "qkv_bias": False, "emb_dim": 16, "n_layers": 2, "n_heads": 2}) built with
# torch.manual_seed(123) and saved with torch.save(model.state_dict(),
# "model.pth"); the initial losses; AdamW(lr=5e-5, weight_decay=0.1);
# torch.manual_seed(123); train_model_simple(num_epochs=2, eval_freq=5,
# eval_iter=5, start_context=format_input(val_data[0])); then the first test
# record's response: generate(max_new_tokens=256, context_size=1024,
# eos_id=50256), decoded, prompt cut off, .replace("### Response:", "").strip().
BOOK_LINES = [
    "Ep 1 (Step 000000): Train loss 11.117, Val loss 11.121",
    "Ep 1 (Step 000005): Train loss 11.121, Val loss 11.113",
    "Ep 2 (Step 000010): Train loss 11.105, Val loss 11.106",
    "Ep 2 (Step 000015): Train loss 11.090, Val loss 11.098",
]
BOOK_TRAIN_LOSSES = [11.117156982421875, 11.120667457580566, 11.104782104492188,
                     11.089946937561034]  # fmt: skip
BOOK_VAL_LOSSES = [11.120665550231934, 11.113218307495117, 11.105830192565918,
                   11.098440170288086]  # fmt: skip
BOOK_TOKENS_SEEN = [488, 3128, 5704, 8376]
# The response is 1,612 characters of a random model's greedy text.
BOOK_RESPONSE_START = "Silk circles assassinsarry announ Crimson SCHOOLSuch Borough"
BOOK_RESPONSE_SHA256 = (
    "42fcef5326ffe8246c287f9576e4542f1a44c880b9993985836740819a5176d5"
)


@pytest.fixture(scope="module")
def book_start(records, tmp_path_factory) -> tuple[Path, Path]:
    """The book's starting point: model.pth of the tiny GPT (gptkit's GPTModel
    creates the same parameters in the same order from the same seed as the
    book's) and the 100-record subset."""
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.model import GPTModel

    root = tmp_path_factory.mktemp("book")
    cfg = GPTConfig(
        vocab_size=50257, context_length=1024, emb_dim=16, n_heads=2, n_layers=2,
        drop_rate=0.0, qkv_bias=False,
    )  # fmt: skip
    torch.manual_seed(123)
    torch.save(GPTModel(cfg).state_dict(), root / "model.pth")
    (root / "subset.json").write_text(json.dumps(records[:100]))
    return root / "model.pth", root / "subset.json"


@pytest.mark.slow
def test_finetune_reproduces_the_books_chapter_7_code(book_start, tmp_path, cli_run):
    model, data = book_start
    run = tmp_path / "run"
    result = cli_run(
        "finetune", "--weights", f"book:{model}", "--n-heads", "2", "--data",
        str(data), "--seed", "123", "--test-responses", "1", "--out", str(run),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("Ep ")]
    assert lines == BOOK_LINES
    evals = [r for r in rows(run / "metrics.jsonl") if "val_loss" in r]
    assert [r["train_loss"] for r in evals] == pytest.approx(
        BOOK_TRAIN_LOSSES, abs=1e-4
    )
    assert [r["val_loss"] for r in evals] == pytest.approx(BOOK_VAL_LOSSES, abs=1e-4)
    assert [r["tokens_seen"] for r in evals] == BOOK_TOKENS_SEEN
    responses = json.loads((run / "responses.json").read_text())
    book_first_test = json.loads(data.read_text())[85]
    assert responses == [
        {**book_first_test, "model_response": responses[0]["model_response"]}
    ]
    text = responses[0]["model_response"]
    assert text.startswith(BOOK_RESPONSE_START)
    assert hashlib.sha256(text.encode()).hexdigest() == BOOK_RESPONSE_SHA256


# -- the run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(small_data, tmp_path_factory) -> Path:
    """A tiny model finetuned for 2 epochs on the 40 records (Python API)."""
    import gptkit

    run = tmp_path_factory.mktemp("runs") / "sft"
    gptkit.finetune(
        data=str(small_data), preset="tiny", context_length=256, lr=1e-3,
        out=str(run), loggers=["jsonl"],
    )  # fmt: skip
    return run


def test_a_finetuning_run_is_a_run_with_its_prompt_style(tuned, small_data):
    import gptkit

    run = gptkit.Run.open(tuned)
    assert run.config["job"] == "finetune"
    assert run.config["prompt_style"] == {"name": "alpaca", "options": {}}
    data = run.config["data"]
    assert (data["train_records"], data["test_records"], data["val_records"]) == (
        34, 4, 2,
    )  # fmt: skip
    assert len(run.steps) == 2 * (34 // 8) and run.evals
    assert isinstance(run.settings, gptkit.FinetuneSettings)
    assert run.settings.lr == 1e-3 and run.settings.epochs == 2
    # The per-epoch sample continues the first validation record's prompt.
    first_val = json.loads(small_data.read_text())[38]
    assert run.samples[0]["prompt"].endswith(first_val["instruction"])
    # responses.json: the test records in the book's format.
    test = json.loads(small_data.read_text())[34:38]
    assert [{k: r[k] for k in test[0]} for r in run.responses] == test
    assert all(isinstance(r["model_response"], str) for r in run.responses)
    ckpt = json.loads((run.checkpoints[-1] / "config.json").read_text())
    assert ckpt["prompt_style"]["name"] == "alpaca"


def test_generate_and_chat_apply_the_runs_style(tuned, cli_run):
    import gptkit

    lm = gptkit.load(str(tuned), device="cpu")
    assert lm.prompt_style.name == "alpaca"
    messages = [{"role": "user", "content": "Name a color."}]
    reply = lm.chat(messages, max_new_tokens=12)
    assert "### Response" not in reply
    raw = lm.generate(lm.chat_prompt(messages), max_new_tokens=12,
                      stop=["\n\n### Instruction:"])  # fmt: skip
    assert reply == raw.replace("### Response:", "").strip()
    out = cli_run("generate", "--weights", str(tuned), "Name a color.",
                  "--max-new-tokens", "12")  # fmt: skip
    assert out.exit_code == 0 and out.stdout.strip() == reply
    # The test responses are what the model answers to each test instruction.
    first = gptkit.Run.open(tuned).responses[0]
    prompt = lm.prompt_style.instruction_prompt(first["instruction"], first["input"])
    again = lm.generate(prompt, max_new_tokens=256)
    assert (
        again.split("<|endoftext|>")[0].replace("### Response:", "").strip()
        == (first["model_response"])
    )


def test_mask_instructions_leaves_the_prompt_out_of_the_loss(small_data, tmp_path):
    import gptkit

    common = dict(data=str(small_data), preset="tiny", context_length=256,
                  max_steps=1, loggers=["jsonl"], test_responses=0)  # fmt: skip
    full = gptkit.finetune(out=str(tmp_path / "a"), **common)
    masked = gptkit.finetune(out=str(tmp_path / "b"), mask_instructions=True, **common)
    # A random init is about equally lost everywhere; masking changes which
    # tokens count, so the first batch's loss differs, and nothing is written.
    assert full.steps[0]["loss"] != masked.steps[0]["loss"]
    assert not (tmp_path / "a" / "responses.json").exists()


# -- faults -------------------------------------------------------------------------


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_finetune_faults_are_one_line(tmp_path, cli_run, small_data):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "output": ""}]))
    cases = {
        (): "--data is required",
        ("--data", str(tmp_path / "none.json")): "instruction data not found",
        ("--data", str(bad)): "record 0: field 'output' is empty",
        ("--data", str(small_data), "--prompt-style", "nope"): "unknown prompt style",
        ("--data", str(small_data), "--prompt-style", "chat-template"): (
            "no chat template"
        ),
        ("--data", str(small_data), "--allowed-max-length", "999"): (
            "--allowed-max-length 999 exceeds the model's context length 256"
        ),
        ("--data", str(small_data), "--train-ratio", "0.9", "--test-ratio", "0.1"): (
            "leaves nothing for validation"
        ),
    }
    for args, message in cases.items():
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        result = cli_run("finetune", *TINY, *args, "--out", str(out))
        assert message in one_line_error(result), args
        assert not out.exists()


def test_prompts_longer_than_the_context_are_skipped_and_counted(
    small_data, tmp_path, cli_run
):
    records = json.loads(small_data.read_text())
    for record in records[:5]:
        record["instruction"] = "Repeat: " + "word " * 100
    data = tmp_path / "long.json"
    data.write_text(json.dumps(records))
    result = cli_run(
        "finetune", *TINY, "--data", str(data), "--allowed-max-length", "100",
        "--max-steps", "1", "--test-responses", "0", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipped 5 record(s) whose prompt is 100 tokens or longer" in (result.stderr)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["data"]["skipped"] == 5 and config["data"]["train_records"] == 29


def test_chat_needs_a_prompt_style(tmp_path):
    import gptkit
    from gptkit.errors import GptkitError

    lm = gptkit.load(preset="tiny", device="cpu")
    with pytest.raises(GptkitError, match="has no prompt style"):
        lm.chat([{"role": "user", "content": "hi"}])


# -- resume -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_a_killed_finetuning_resumes_to_the_uninterrupted_run(
    small_data, tmp_path, mode
):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    model = TINY
    if mode != "full":  # adapters on a saved base: only they are checkpointed
        import torch

        from gptkit.core.config import get_preset
        from gptkit.core.model import GPTModel

        torch.manual_seed(5)
        base = GPTModel(get_preset("tiny").replace(context_length=256))
        torch.save(base.state_dict(), tmp_path / "base.pth")
        model = ["--weights", f"book:{tmp_path / 'base.pth'}", "--n-heads", "2",
                 "--lora", "r=4,alpha=8,dropout=0.1"]  # fmt: skip
        if mode == "qlora":  # over a frozen int8 base
            model += ["--quantize", "int8"]
    args = ["finetune", *model, "--data", str(small_data), "--lr", "1e-3",
            "--checkpoint-every", "2", "--logger", "jsonl",
            "--response-tokens", "32"]  # fmt: skip

    def start(extra: list[str], pause_at: int | None = None) -> subprocess.Popen:
        launcher = ["-m", "gptkit"]
        if pause_at is not None:
            launcher = [str(REPO / "tests" / "pause_at_checkpoint.py"), str(pause_at)]
        return subprocess.Popen(
            [sys.executable, *launcher, *args, *extra], env=env,
            stdout=subprocess.DEVNULL, stderr=tempfile.TemporaryFile(),
        )  # fmt: skip

    run, reference = tmp_path / "killed", tmp_path / "reference"
    first = start(["--out", str(run)], pause_at=4)
    try:
        assert start(["--out", str(reference)]).wait(timeout=600) == 0
        deadline = time.monotonic() + 300
        while not list(
            (run / "checkpoints").glob(".tmp-step-000004-*/model.safetensors")
        ):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    finally:
        if first.poll() is None:
            first.kill()
    resumed = subprocess.run(
        [sys.executable, "-m", "gptkit", "finetune", "--resume", str(run)],
        env=env, capture_output=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert rows(run / "metrics.jsonl") == rows(reference / "metrics.jsonl")
    assert rows(run / "samples.jsonl") == rows(reference / "samples.jsonl")
    assert json.loads((run / "responses.json").read_text()) == json.loads(
        (reference / "responses.json").read_text()
    )


# -- chat ---------------------------------------------------------------------------


def test_gptkit_chat_in_a_terminal(tuned):
    """Streaming, /reset, Ctrl-C stopping one answer (not the session), /exit."""
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    # Ctrl-C's default disposition in the child, whatever the runner's: a
    # shell starts background jobs with SIGINT ignored, which Python keeps.
    child = pexpect.spawn(
        sys.executable,
        ["-m", "gptkit", "chat", "--weights", str(tuned), "--max-new-tokens", "4000"],
        env=env, encoding="utf-8", timeout=240,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        child.expect("alpaca prompt style")
        child.expect_exact("you> ")
        child.sendline("Name a color.")
        child.expect_exact("model> ")
        child.expect(r"\S")  # streaming: the first piece arrives before the end
        child.sendintr()  # Ctrl-C: this answer stops, the session goes on
        child.expect_exact("[stopped]")
        child.expect_exact("you> ")
        child.sendline("/reset")
        child.expect_exact("(the conversation is forgotten)")
        child.expect_exact("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_chat_history_keeps_to_the_context(tuned):
    import gptkit
    from gptkit.cli.chat import fit_history

    lm = gptkit.load(str(tuned), device="cpu")  # context 256
    turn = "word " * 40
    history = [{"role": "system", "content": "Be brief."}]
    for _ in range(4):
        history += [
            {"role": "user", "content": turn},
            {"role": "assistant", "content": turn},
        ]
    history.append({"role": "user", "content": "Last question?"})
    kept = fit_history(lm, history, 1, {"max_new_tokens": 64})
    assert kept[0] == history[0] and kept[-1] == history[-1]
    assert len(kept) < len(history) and (len(history) - len(kept)) % 2 == 0
    assert len(lm.encode(lm.chat_prompt(kept))) <= 256 - 64


def test_chat_refuses_a_model_without_a_prompt_style(tmp_path, cli_run):
    import torch

    from gptkit.core.config import get_preset
    from gptkit.core.model import GPTModel

    torch.save(GPTModel(get_preset("tiny")).state_dict(), tmp_path / "m.pth")
    result = cli_run(
        "chat", "--weights", f"book:{tmp_path / 'm.pth'}", "--n-heads", "2"
    )
    assert "has no prompt style" in one_line_error(result)


# -- evaluation ---------------------------------------------------------------------


def test_eval_data_is_the_response_only_loss_of_the_test_split(
    tuned, small_data, cli_run
):
    import math

    import torch

    import gptkit
    from gptkit.core.tokenizer import EOT_ID

    result = cli_run("eval", "--weights", str(tuned), "--data", str(small_data),
                     "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    # Independently: each test record alone, unpadded; the loss of its response
    # tokens and the end of text after them, given everything before.
    lm = gptkit.load(str(tuned), device="cpu")
    style = lm.prompt_style
    total, count = 0.0, 0
    for record in json.loads(small_data.read_text())[34:38]:
        prompt = style.instruction_prompt(record["instruction"], record["input"])
        ids = [*lm.encode(prompt + style.response_text(record["output"])), EOT_ID]
        start = len(lm.encode(prompt))
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(torch.tensor([ids[:-1]]))[0], -1)
        for pos in range(start - 1, len(ids) - 1):
            total -= logp[pos, ids[pos + 1]].item()
            count += 1
    assert got["test_records"] == 4 and got["response_tokens"] == count
    assert got["test_loss"] == pytest.approx(total / count, rel=1e-5)
    assert got["test_perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
