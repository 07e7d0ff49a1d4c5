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
