"""Faults found by a probe of the CLI, the Python API, bench and training
(issue 22): each test reproduces one and fails on the code before its fix."""

from __future__ import annotations

import math

import pytest

import gptkit
from gptkit.errors import GptkitError
from tests.conftest import assert_clean_error

# Tiny models: one torch thread (OpenMP threads waiting for a busy core of a
# shared machine make each small operation many times slower).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm():
    return gptkit.load(preset="tiny", device="cpu")


# -- 6: seeds outside int64 --


@pytest.mark.parametrize("seed", [2**64, 2**70, -1])
def test_a_seed_outside_63_bits_is_a_setting_error(lm, seed):
    with pytest.raises(GptkitError, match="seed"):
        gptkit.load(preset="tiny", seed=seed)
    with pytest.raises(GptkitError, match="seed"):
        lm.generate("a", seed=seed, max_new_tokens=1)
    with pytest.raises(GptkitError, match="seed"):
        gptkit.TrainSettings.create(seed=seed)


def test_the_largest_seed_works(lm):
    out = lm.generate("a", seed=2**63 - 1, temperature=1.0, max_new_tokens=2)
    assert isinstance(out, str)


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "--weights", "nope", "--seed", "18446744073709551616", "hi"),
        ("train", "--preset", "tiny", "--seed", "18446744073709551616"),
        ("eval", "--preset", "tiny", "--seed", "18446744073709551616"),
        ("bench", "sampling", "--seed", "18446744073709551616"),
    ],
)
def test_the_command_line_refuses_a_huge_seed_in_one_line(cli_run, args):
    assert_clean_error(cli_run(*args), "--seed")


# -- 13: numeric edges of the sampling settings --


@pytest.mark.parametrize(
    "settings",
    [
        {"top_p": 5e-324, "seed": 1},
        {"temperature": 1e-300, "seed": 1},
        {"temperature": 1e-300, "top_k": 5, "seed": 1},
        {"repetition_penalty": 1e-300, "temperature": 1.0, "seed": 1},
        {"repetition_penalty": 1e308, "temperature": 1.0, "seed": 1},
        {"num_beams": 2, "length_penalty": 1e308},
        {"num_beams": 2, "length_penalty": -1e308},
        {"min_p": 5e-324, "seed": 1},
    ],
)
def test_extreme_but_valid_sampling_values_generate(lm, settings):
    text = lm.generate("Every effort moves", max_new_tokens=3, **settings)
    assert isinstance(text, str) and text


def test_a_vanishing_temperature_is_greedy(lm):
    greedy = lm.generate("Every effort moves", max_new_tokens=5)
    cold = lm.generate("Every effort moves", max_new_tokens=5, temperature=1e-300)
    assert cold == greedy


@pytest.mark.parametrize("name", ["temperature", "length_penalty", "top_p"])
def test_nan_is_refused_for_any_float(lm, name):
    extra = {"num_beams": 2} if name == "length_penalty" else {}
    with pytest.raises(GptkitError, match=name):
        lm.generate("a", max_new_tokens=1, **{name: math.nan}, **extra)


# -- 17: the Python API raises GptkitError, not TypeError/ValueError --


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda lm: lm.generate(None), "prompt"),
        (lambda lm: lm.generate([]), "prompt"),
        (lambda lm: lm.generate([1, 2]), "prompt"),
        (lambda lm: lm.generate("a", stop=None), "stop"),
        (lambda lm: lm.generate("a", stop=5), "stop"),
        (lambda lm: lm.generate("a\ud800"), "surrogate"),
        (lambda lm: list(lm.stream(["a"])), "prompt"),
        (lambda lm: lm.decode([10**9]), "vocabulary"),
        (lambda lm: lm.decode([-1]), "vocabulary"),
        (lambda lm: lm.encode(None), "text"),
        (lambda lm: lm.loss(None), "text"),
        (lambda lm: gptkit.train(corpus=None), "corpus"),
        (lambda lm: gptkit.train(loggers=None), "loggers"),
        (lambda lm: gptkit.train("runs/x"), "TrainSettings"),
        (lambda lm: gptkit.Run.open(None), "directory"),
        (lambda lm: gptkit.resume(None), "run_dir"),
    ],
)
def test_wrong_arguments_raise_gptkit_errors(lm, call, fragment):
    with pytest.raises(GptkitError, match=fragment):
        call(lm)


def test_an_unknown_plot_is_a_gptkit_error(tmp_path):
    run = gptkit.train(
        corpus="the-verdict",
        preset="tiny",
        max_steps=1,
        eval_freq=1,
        eval_iter=1,
        max_new_tokens=0,
        loggers=["jsonl"],
        out=str(tmp_path / "run"),
        device="cpu",
    )
    with pytest.raises(GptkitError, match="unknown plot 'nope'"):
        run.plot("nope")


# -- 12: models with a vocabulary smaller than GPT-2's tokenizer --


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory):
    from tests.conftest import save_transformers_gpt2

    path = tmp_path_factory.mktemp("vocab1000") / "m"
    save_transformers_gpt2(path, vocab_size=1000, n_positions=64)
    return f"hf:{path}"


def test_generate_with_a_small_vocabulary_says_so(cli_run, small_vocab_model):
    result = cli_run("generate", "--weights", small_vocab_model, "Every effort moves")
    assert_clean_error(result, "vocabulary of 1,000")


def test_eval_with_a_small_vocabulary_says_so(cli_run, small_vocab_model):
    result = cli_run("eval", "--weights", small_vocab_model, "--corpus", "the-verdict")
    assert_clean_error(result, "vocabulary of 1,000")
    with pytest.raises(GptkitError, match="vocabulary"):
        gptkit.load(small_vocab_model, device="cpu")


def test_train_with_a_small_vocabulary_leaves_no_run_directory(
    cli_run, small_vocab_model, tmp_path
):
    out = tmp_path / "run"
    result = cli_run(
        *("train", "--weights", small_vocab_model, "--corpus", "the-verdict"),
        *("--out", str(out), "--device", "cpu"),
    )
    assert_clean_error(result, "vocabulary of 1,000")
    assert not out.exists() or not any(out.iterdir())


# -- 15: a prepared token file holding ids past the vocabulary --


def test_a_prepared_corpus_with_a_foreign_id_is_one_line(cli_run, tmp_path):
    import numpy as np

    from gptkit.core.token_files import read_meta

    data = tmp_path / "prepared"
    text = tmp_path / "t.txt"
    text.write_text("Every effort moves you. " * 400, encoding="utf-8")
    ok = cli_run("prepare", str(text), "--out", str(data))
    assert ok.exit_code == 0, ok.stderr
    meta = read_meta(data)
    tokens = np.memmap(data / meta["tokens_file"], dtype=np.uint16, mode="r+")
    tokens[5] = 65535
    tokens.flush()
    del tokens
    result = cli_run(
        *("train", "--data", str(data), "--preset", "tiny", "--device", "cpu"),
        *("--context-length", "16", "--out", str(tmp_path / "run")),
    )
    assert_clean_error(result, "token id 65,535", "vocabulary of 50,257 tokens")


# -- 4: bench and prompt readers are bounded --


def test_bench_sampling_refuses_huge_beams_before_allocating(cli_run, monkeypatch):
    from gptkit.bench import runners

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the preflight")

    monkeypatch.setattr(runners, "bench_model", no_model)
    result = cli_run(
        *("bench", "sampling", "--preset", "tiny", "--samplers", "beam"),
        *("-o", "beam.num_beams=100000", "--device", "cpu"),
    )
    assert_clean_error(result, "generation needs about", "-o beam.num_beams")


def test_bench_training_refuses_a_huge_batch_before_allocating(cli_run, monkeypatch):
    from gptkit.bench import limits

    def no_measurement(*args, **kwargs):
        raise AssertionError("the benchmark started before the preflight")

    monkeypatch.setattr(limits, "machine_limits", no_measurement)
    result = cli_run(
        *("bench", "training", "--preset", "tiny", "--batch-size", "100000"),
        *("--device", "cpu"),
    )
    assert_clean_error(result, "training needs about", "--batch-size")


@pytest.fixture
def small_input_limit(monkeypatch):
    from gptkit.cli import inputs

    monkeypatch.setattr(inputs, "MAX_INPUT_BYTES", 1000)


def test_standard_input_is_read_bounded(cli_run, small_input_limit):
    result = cli_run("generate", "--weights", "nope", "-", input="a\n" * 600)
    assert_clean_error(result, "standard input holds more than")


def test_a_prompts_file_is_read_bounded(cli_run, tmp_path, small_input_limit):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a prompt\n" * 200, encoding="utf-8")
    result = cli_run("bench", "sampling", "--preset", "tiny", "--prompts", str(prompts))
    assert_clean_error(result, "prompts file", "holds more than")


def test_generate_reads_prompts_from_standard_input_as_before():
    import io
    import sys

    from gptkit.cli.generate import read_prompts

    for text, lines in [("a\nb\n", ["a", "b"]), ("a\n\nb", ["a", "", "b"])]:
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode()))
        try:
            assert read_prompts(("-",)) == lines
        finally:
            sys.stdin = saved


# -- 19: prepare on a FIFO --


def test_prepare_on_a_fifo_says_what_it_is(cli_run, tmp_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = cli_run("prepare", str(fifo), "--out", str(tmp_path / "out"))
    assert_clean_error(result, "FIFO", "not a regular file")
    result = cli_run("train", "--corpus", str(fifo), "--out", str(tmp_path / "run"))
    assert_clean_error(result, "FIFO", "not a regular file")


# -- 20: eval's memory preflight comes before the model is built --


def test_eval_refuses_a_huge_context_before_building_the_model(cli_run, monkeypatch):
    from gptkit.core import weights

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the preflight")

    monkeypatch.setattr(weights, "build_model", no_model)
    result = cli_run(
        *("eval", "--preset", "tiny", "--context-length", "4000000"),
        *("--corpus", "the-verdict", "--device", "cpu"),
    )
    assert_clean_error(result, "evaluation needs about", "--context-length")


# -- 21: core errors name settings, each front end says them its way --


def _raised_texts(path):
    """The string constants of every ``raise`` statement in a module."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for part in ast.walk(node.exc):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    yield node.lineno, part.value


def test_no_core_error_names_a_command_line_flag():
    import re

    from tests.conftest import REPO

    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    found = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for folder in ("core", "plugins")
        for path in sorted((REPO / "src" / "gptkit" / folder).rglob("*.py"))
        for line, text in _raised_texts(path)
        if flag.search(text)
    ]
    assert not found, "\n".join(found)


def test_a_device_error_names_the_setting_per_front_end(cli_run):
    import torch

    from gptkit.core.device import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(GptkitError) as info:
        resolve_device("cuda")
    assert str(info.value) == "device cuda: no CUDA device is available"
    result = cli_run("generate", "--weights", "x", "--device", "cuda", "hi")
    assert_clean_error(result, "--device cuda: no CUDA device")


# -- 16: quantized checkpoints --


@pytest.fixture
def int8_checkpoint(tmp_path):
    from gptkit.core.quantize import quantize_model
    from gptkit.formats.quantized import save_quantized

    lm = gptkit.load(preset="tiny", device="cpu")
    quantize_model(lm.model, "int8")
    return save_quantized(lm.model, tmp_path / "q8")


@pytest.mark.parametrize(
    "record", [[1, 2], {"method": "int8", "options": "x"}, {"options": {}}, "int8"]
)
def test_a_damaged_quantization_record_is_one_line(cli_run, int8_checkpoint, record):
    import json

    path = int8_checkpoint / "config.json"
    config = json.loads(path.read_text())
    config["quantization"] = record
    path.write_text(json.dumps(config))
    result = cli_run("generate", "--weights", str(int8_checkpoint), "hi")
    assert_clean_error(result, "'quantization' record is damaged")


@pytest.mark.parametrize("command", ["train", "export"])
def test_train_and_export_say_the_checkpoint_is_quantized(
    cli_run, int8_checkpoint, tmp_path, command
):
    args = {
        "train": ("train", "--corpus", "the-verdict", "--out", str(tmp_path / "run")),
        "export": ("export", "--format", "hf", str(tmp_path / "hf")),
    }[command]
    result = cli_run(*args, "--weights", str(int8_checkpoint))
    assert_clean_error(result, "this checkpoint is quantized (int8)")
    assert not (tmp_path / "run").exists() and not (tmp_path / "hf").exists()


def test_a_changed_n_heads_is_refused(cli_run, int8_checkpoint, tmp_path):
    import json

    from gptkit.core.checkpoints.native import save_checkpoint

    path = int8_checkpoint / "config.json"
    config = json.loads(path.read_text())
    config["model"]["n_heads"] = 4
    path.write_text(json.dumps(config))
    result = cli_run("generate", "--weights", str(int8_checkpoint), "hi")
    assert_clean_error(result, "says n_heads 4", "saved with n_heads 2")
    # the same for a float checkpoint
    lm = gptkit.load(preset="tiny", device="cpu")
    ckpt = save_checkpoint(tmp_path / "ckpts", 1, lm.model, lm.config)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["n_heads"] = 1
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(GptkitError, match="says n_heads 1"):
        gptkit.load(str(ckpt), device="cpu")


# -- 7: resume with another process count, under every logger --


def _logger_names():
    from gptkit.core.registry import get_registry, reset_registry

    names = list(get_registry().loggers.names())
    reset_registry()
    return names


@pytest.fixture(scope="module")
def run_of_two_processes(tmp_path_factory):
    """A one-process run whose checkpoint says two processes trained it (what
    a resume from a 2-process run sees, without launching two)."""
    import shutil

    import torch

    run = tmp_path_factory.mktemp("two") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gptkit.train(
        preset="tiny",
        corpus="the-verdict",
        device="cpu",
        context_length=16,
        max_steps=4,
        checkpoint_every=2,
        eval_iter=1,
        data_order="seeded",
        grad_accum=2,
        max_new_tokens=0,
        loggers=["jsonl"],
        out=str(run),
    )
    torch.set_num_threads(threads)
    shutil.rmtree(run / "checkpoints" / "step-000004")
    path = run / "checkpoints" / "step-000002" / "trainer_state.pt"
    state = torch.load(path, weights_only=False)
    state.update(world_size=2, batch_in_epoch=state["batch_in_epoch"] // 2)
    state["settings"]["grad_accum"] = 1
    torch.save(state, path)
    return run


@pytest.mark.parametrize("logger", _logger_names())
def test_resume_with_another_process_count_under_every_logger(
    cli_run, tmp_path, logger, run_of_two_processes
):
    import shutil

    run = shutil.copytree(run_of_two_processes, tmp_path / "run")
    result = cli_run("train", "--resume", str(run), "--logger", logger)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    if logger == "console":  # the note is told once the logger has started
        assert "resuming a run of 2 process(es) with 1" in result.stdout


# -- 18, 21: a multi-process run ends with one gptkit line --


def _launch(args, **kwargs):
    """``gptkit train --devices 2 ARGS`` as a user runs it (a subprocess)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "gptkit", "train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


_LONG_RUN = (
    *("--devices", "2", "--preset", "tiny", "--corpus", "the-verdict"),
    *("--context-length", "16", "--batch-size", "2", "--epochs", "100"),
    *("--logger", "jsonl", "--max-new-tokens", "0", "--eval-freq", "1000"),
)


def _wait_for_steps(run, proc):
    import time

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") >= 3:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
    raise AssertionError("the run did not start")


def _workers(pid):
    from pathlib import Path

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _one_line(proc, *fragments):
    err = proc.stderr.read()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.slow
def test_kill_9_of_one_rank_is_one_gptkit_line(tmp_path):
    import os
    import signal

    run = tmp_path / "run"
    proc = _launch([*_LONG_RUN, "--out", str(run)])
    _wait_for_steps(run, proc)
    worker = max(_workers(proc.pid))  # the second one started
    os.kill(worker, signal.SIGKILL)
    assert proc.wait(timeout=120) == 2
    _one_line(proc, "gptkit: error: training process", "killed by SIGKILL")


@pytest.mark.slow
def test_sigterm_to_the_launcher_is_one_gptkit_line(tmp_path):
    import signal

    run = tmp_path / "run"
    proc = _launch([*_LONG_RUN, "--out", str(run)])
    _wait_for_steps(run, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    _one_line(proc, "gptkit: interrupted at step", "checkpoint saved")
    # ... and a wrong number of processes for that run is refused once
    proc = _launch(["--resume", str(run), "--devices", "3"])
    assert proc.wait(timeout=240) == 2
    _one_line(proc, "gptkit: error: the run's global batch", "divides 2")


# -- a plain torchrun (not gptkit train --devices): what gptkit controls --


def _plain_torchrun(args):
    """``torchrun --standalone --nproc-per-node 2 -m gptkit.cli.main train ARGS``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("no torchrun next to the interpreter")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2"]
    return subprocess.Popen(
        [*command, "-m", "gptkit.cli.main", "train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _gptkit_lines(text):
    return [line for line in text.splitlines() if line.startswith("gptkit:")]


def test_the_cli_module_runs_as_a_script():
    # torchrun -m gptkit.cli.main (and python -m gptkit.cli.main) run the
    # command line; the module did nothing and exited 0 before.
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run(
        [sys.executable, "-m", "gptkit.cli.main", "--version"],
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "gptkit" in result.stdout, result.stderr


@pytest.mark.slow
def test_plain_torchrun_sigterm_is_one_gptkit_line(tmp_path):
    import signal

    run = tmp_path / "run"
    assert _LONG_RUN[:2] == ("--devices", "2")
    args = list(_LONG_RUN[2:])
    proc = _plain_torchrun([*args, "--out", str(run)])
    _wait_for_steps(run, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    err = proc.stderr.read()
    # every rank stops at the same step; rank 0 alone says so (torchrun's own
    # launcher then prints its SignalException: gptkit does not run it)
    lines = _gptkit_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("gptkit: interrupted at step"), lines


@pytest.mark.slow
def test_plain_torchrun_failure_summary_names_the_gptkit_line(tmp_path):
    proc = _plain_torchrun(
        ["--preset", "tiny", "--corpus", str(tmp_path / "missing.txt")]
    )
    assert proc.wait(timeout=240) != 0
    err = proc.stderr.read()
    assert _gptkit_lines(err) == ["gptkit: error: corpus file not found:"
                                  f" {tmp_path / 'missing.txt'}"] * 2, err  # fmt: skip
    # torchrun's summary shows each worker's line (torch elastic's error
    # file), not "To enable traceback see ..."
    summary = [line.strip() for line in err.splitlines() if "traceback :" in line]
    assert len(summary) == 2, err
    assert all("gptkit: error: corpus file not found" in s for s in summary), summary


def test_a_peer_failure_is_recognised_after_the_group_is_gone(monkeypatch):
    """A worker whose collective failed because another died raises through the
    run's cleanup, which leaves the process group before the error reaches the
    command line: the failure is still one "another process stopped" line."""
    import torch.distributed  # noqa: F401  (loaded, as in a training process)

    from gptkit.api.failures import peer_failure_message

    error = RuntimeError(
        "[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:6545:"
        " Connection reset by peer. This is typically caused by a remote worker"
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    message = peer_failure_message(error)
    assert message is not None and "another process of this run stopped" in message
    assert "\n" not in message
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert peer_failure_message(error) is None  # one process: not a peer's failure
    assert peer_failure_message(RuntimeError("shape mismatch")) is None
