"""The documentation site and the README, checked: the site builds with
``mkdocs build --strict`` (broken links and anchors fail it), the command-line
reference is each command's real ``--help``, the README keeps its promises
(≤ 200 lines, the test command is CI's), and a new user's path — README and
getting started, from a fresh directory to a trained model, a generated sample
and a served completion — works with the commands as written (on a tiny model)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.doc_blocks import environment

README = REPO / "README.md"
GETTING_STARTED = REPO / "docs" / "getting-started.md"
HOOKS = REPO / "docs" / "hooks"


def _hook(name: str):
    sys.path.insert(0, str(HOOKS))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


# -- the site -------------------------------------------------------------------


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    site = tmp_path / "site"
    env = environment(REPO)
    env["NO_MKDOCS_2_WARNING"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "Usage: gptkit train [OPTIONS]" in cli_page
    bench_page = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "<!-- gptkit-bench-results -->" not in bench_page
    notebook = site / "tutorials" / "chapter5-notebook" / "index.html"
    assert "data:image/png;base64" in notebook.read_text(encoding="utf-8")
    api = (site / "reference" / "python-api" / "index.html").read_text("utf-8")
    assert "LanguageModel" in api and "Run" in api


def test_every_page_is_in_the_navigation() -> None:
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r":\s*([\w/.-]+\.(?:md|ipynb))\s*$", config, re.M))
    docs = REPO / "docs"
    pages = {
        str(p.relative_to(docs))
        for p in [*docs.rglob("*.md"), *docs.rglob("*.ipynb")]
        if "hooks" not in p.parts
    }
    assert pages == nav


# -- the command-line reference -------------------------------------------------


def test_the_cli_reference_page_is_generated() -> None:
    page = (REPO / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    hook = _hook("cli_reference")
    assert hook.MARKER in page
    assert "Usage:" not in page  # nothing written by hand that could drift


def test_the_cli_reference_is_the_real_help() -> None:
    """Each section of the generated page equals what ``gptkit ... --help``
    prints in a shell (a real process, at the page's width), for every built-in
    command and subcommand."""
    hook = _hook("cli_reference")
    markdown = hook.reference_markdown()
    env = environment(REPO)
    env.update(COLUMNS=hook.COLUMNS, GPTKIT_LOAD_PLUGINS="")
    paths = hook.command_paths()
    listed = subprocess.run(
        [sys.executable, "-m", "gptkit", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    commands = re.findall(r"^  (\w[\w-]*)\s", listed.split("Commands:")[1], re.M)
    assert sorted(commands) == sorted(p[0] for p in paths if len(p) == 1)
    for path in paths:
        shown = subprocess.run(
            [sys.executable, "-m", "gptkit", *path, "--help"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        shown = shown.replace("Usage: python -m gptkit", "Usage: gptkit")
        block = f"```text\n{shown.rstrip()}\n```"
        assert block in markdown, f"gptkit {' '.join(path)} --help differs"


# -- the benchmarks page --------------------------------------------------------


def test_the_benchmark_tables_come_from_committed_results() -> None:
    hook = _hook("benchmarks")
    results = hook.load_results()
    assert results, "no gptkit bench results under docs/benchmarks/results"
    markdown = hook.results_markdown()
    for name, result in results:
        machine = result["machine"]
        for key in ("command", "gptkit_commit", "cpu_features", "torch"):
            assert machine.get(key) is not None, (name, key)
        assert hook.machine_label(result) in markdown
        assert f"`{name}`" in markdown
        assert machine["command"] in markdown


# -- the README -----------------------------------------------------------------


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_the_readme_is_short() -> None:
    assert len(_readme().splitlines()) <= 200


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    blocks = re.findall(r"^```bash\n(.*?)^```", _readme(), re.M | re.S)
    assert ci + "\n" in blocks
    assert any(ci in b for b in re.findall(r"^```bash\n(.*?)^```", _gs(), re.M | re.S))


def test_the_readme_says_what_never_ran() -> None:
    text = _readme()
    assert "never run" in text and "CUDA" in text and "MPS" in text


def test_the_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", _readme()):
        if target.startswith(("http://", "https://")):
            continue
        assert (REPO / target).exists(), target


def _gs() -> str:
    return GETTING_STARTED.read_text(encoding="utf-8")


# -- a new user's path ----------------------------------------------------------


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : None if end < 0 else end]


def _quickstart_commands(text: str) -> list[str]:
    """The shell lines of the quickstart's bash blocks (continuations joined)."""
    section = _section(text, "Quickstart")
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", section, re.M | re.S):
        lines += block.replace("\\\n", " ").strip().splitlines()
    return lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY = ["--preset", "tiny", "--max-steps", "4", "--eval-freq", "2", "--eval-iter", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("page", [README, GETTING_STARTED], ids=["readme", "start"])
def test_a_new_users_path(page: Path, tmp_path: Path) -> None:
    """The quickstart's commands as written, in a fresh directory with an empty
    gptkit cache: `gptkit train` gets a tiny configuration appended, `pip install`
    lines are checked (the extra is installed here) rather than run, the server
    runs on a free port instead of 8000."""
    text = page.read_text(encoding="utf-8")
    commands = _quickstart_commands(text)
    assert [c.split()[:2] for c in commands] == [
        ["gptkit", "train"],
        ["gptkit", "generate"],
        ["pip", "install"],
        ["gptkit", "serve"],
        ["curl", "-s"],
    ]
    env = environment(REPO)
    env["GPTKIT_CACHE_DIR"] = str(tmp_path / "cache")
    port = str(_free_port())

    def sh(line: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-e", "-c", line],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            **kwargs,
        )

    train, generate, pip, serve, curl = commands
    done = sh(f"{train} {shlex.join(TINY)}")
    assert done.returncode == 0, done.stderr
    assert "done: 4 steps" in done.stdout
    assert (tmp_path / "runs/mini/checkpoints/step-000004/model.safetensors").is_file()
    sample = sh(generate)
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("The function returns")

    extra = re.search(r"\.\[(\w+)\]", pip)
    assert extra, pip
    pytest.importorskip("uvicorn")  # the extra `pip install` names is installed

    assert "--port 8000" in serve and "127.0.0.1:8000" in curl
    server = subprocess.Popen(
        ["bash", "-c", "exec " + serve.replace("--port 8000", f"--port {port}")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        curl_line = curl.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        if shutil.which("curl"):
            answer = sh(curl_line)
            assert answer.returncode == 0, answer.stderr
            body = json.loads(answer.stdout)
        else:  # the same request, as the curl line states it
            words = shlex.split(curl_line)
            payload = words[words.index("-d") + 1].encode()
            request = urllib.request.Request(
                words[2], payload, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request) as r:
                body = json.loads(r.read())
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert body["object"] == "text_completion" and body["model"] == "mini"
    served = body["choices"][0]["text"]
    assert served and body["choices"][0]["finish_reason"] == "length"
    # temperature 0 is greedy: the served text continues the prompt exactly as
    # `gptkit generate` (greedy by default, more tokens) did
    assert " ".join(sample.stdout.split()).startswith(
        " ".join(("The function returns" + served).split())
    )

    if page == README:  # the README's Python lines read the same run
        [code] = re.findall(
            r"^```python\n(.*?)^```", _section(text, "Quickstart"), re.M | re.S
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "'val_loss'" in result.stdout


def test_getting_started_quickstart_matches_the_readme() -> None:
    assert _quickstart_commands(_gs()) == _quickstart_commands(_readme())
