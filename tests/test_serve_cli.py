"""``gptkit serve`` as a command: cheap help, one-line errors before loading."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import assert_clean_error
from tests.serve_harness import save_tiny_run

SERVING = {"torch", "tiktoken", "starlette", "uvicorn", "pydantic", "prometheus_client"}


def test_serve_help_imports_no_torch_and_no_server_stack():
    code = (
        "import sys\n"
        "from gptkit.cli.main import cli\n"
        "try:\n"
        "    cli.main(['serve', '--help'], prog_name='gptkit')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Examples:" in proc.stdout and "--max-batch-size" in proc.stdout
    line = [x for x in proc.stderr.splitlines() if x.startswith("MODULES")][-1]
    assert not SERVING & set(line.split()[1:])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "--weights SPEC, or --preset NAME"),
        (("--preset", "tiny", "--weights", "x"), "--weights SPEC, or --preset NAME"),
        (("--preset", "tiny", "--max-batch-size", "0"), "--max-batch-size"),
        (("--preset", "tiny", "--port", "70000"), "--port"),
        (
            ("--preset", "tiny", "--api-key-env", "GPTKIT_SURELY_UNSET"),
            "GPTKIT_SURELY_UNSET",
        ),
        # issue 22, fault 9: a queue of 0 would answer every request with 503
        (("--preset", "tiny", "--max-queue", "0"), "--max-queue"),
        (("--preset", "tiny", "--read-timeout", "0"), "--read-timeout"),
        (("--preset", "tiny", "--draft", "a=x", "--draft", "a=y"), "names 'a' twice"),
        (("--preset", "tiny", "--draft", "=x"), "--draft"),
    ],
)
def test_bad_options_are_one_line_errors(cli_run, args, fragment):
    assert_clean_error(cli_run("serve", *args), fragment)


def test_a_port_in_use_is_a_one_line_error(cli_run, tmp_path):
    run = save_tiny_run(tmp_path / "run")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = cli_run("serve", "--weights", str(run), "--port", str(port))
    finally:
        taken.close()
    assert_clean_error(result, f"cannot listen on 127.0.0.1:{port}")


def test_default_model_names():
    from gptkit.serve.loading import default_name

    assert default_name("hf:gpt2") == "gpt2"
    assert default_name("hf:openai-community/gpt2-medium@main") == (
        "openai-community/gpt2-medium"
    )
    assert default_name("book:models/model.pth") == "model"
    assert default_name("runs/20261128-223000") == "20261128-223000"


def _serving_section() -> str:
    """The serving guide, docs/serving.md."""
    from tests.conftest import REPO

    return (REPO / "docs" / "serving.md").read_text(encoding="utf-8")


def test_the_serving_guide_documents_every_request_field():
    from gptkit.serve.schemas import CompletionRequest

    section = _serving_section()
    missing = [f for f in CompletionRequest.model_fields if f"`{f}`" not in section]
    assert missing == []


def test_the_serving_guide_python_examples_parse():
    import ast
    import re

    blocks = re.findall(r"^```python\n(.*?)^```", _serving_section(), re.M | re.S)
    assert len(blocks) == 2
    for block in blocks:
        ast.parse(block)


def test_a_draft_that_cannot_be_loaded_is_a_one_line_error(cli_run, tmp_path):
    run = save_tiny_run(tmp_path / "run")
    result = cli_run("serve", "--weights", str(run), "--draft", f"d={tmp_path}/none")
    assert_clean_error(result, "none")


def test_a_draft_with_a_smaller_vocabulary_is_refused(tmp_path):
    from gptkit.core.checkpoints.native import save_checkpoint
    from gptkit.core.config import get_preset
    from gptkit.core.model import GPTModel
    from gptkit.errors import GptkitError
    from gptkit.serve.loading import load_drafts

    cfg = get_preset("tiny").replace(context_length=32, vocab_size=1000)
    save_checkpoint(tmp_path / "d" / "checkpoints", 1, GPTModel(cfg), cfg)
    model = GPTModel(get_preset("tiny").replace(context_length=32))
    with pytest.raises(GptkitError, match="vocabulary has 1000 tokens"):
        load_drafts(model, {"d": str(tmp_path / "d")})


def test_draft_names(tmp_path):
    from gptkit.serve.settings import ServeSettings

    drafts = ServeSettings.create(
        {"draft": ("small=hf:gpt2", "runs/tiny", "book:m/model.pth")}
    ).drafts()
    assert drafts == {
        "small": "hf:gpt2",
        "tiny": "runs/tiny",
        "model": "book:m/model.pth",
    }


@pytest.mark.slow
def test_a_non_loopback_host_without_a_key_warns(tmp_path):
    """Issue 22, fault 19: listening on every interface with no API key says so."""
    import os
    import select
    import signal
    import time

    run = save_tiny_run(tmp_path / "run", context_length=32)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptkit", "serve", "--weights", str(run), "--host",
         "0.0.0.0", "--port", "0", "--device", "cpu", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        stdout = b""
        while b"/v1" not in stdout and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if select.select([proc.stdout], [], [], 0.5)[0]:
                stdout += proc.stdout.readline()
        assert b"/v1" in stdout, stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert "warning: listening on 0.0.0.0 without an API key" in stderr.decode()
    from gptkit.serve.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
