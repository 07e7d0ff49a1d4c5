"""The architecture as a contract: the layers and the no-cycle rule of
pyproject.toml ([tool.importlinter]) hold, and the contract bites."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SRC = REPO / "src" / "gptkit"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path, src: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contract_holds() -> None:
    result = _lint_imports(REPO, REPO / "src")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """A copy of the package and the contract, to break on purpose."""
    shutil.copytree(SRC, tmp_path / "src" / "gptkit")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(tree: Path, module: str, line: str) -> None:
    path = tree / "src" / "gptkit" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_an_upward_import_breaks_the_contract(tree_copy: Path) -> None:
    _add_import(tree_copy, "core/loss.py", "import gptkit.api.runs  # upward")
    result = _lint_imports(tree_copy, tree_copy / "src")
    assert result.returncode != 0
    assert "gptkit.core is not allowed to import gptkit.api" in result.stdout


def test_a_plugin_importing_the_cli_breaks_the_contract(tree_copy: Path) -> None:
    _add_import(tree_copy, "plugins/samplers/token.py", "import gptkit.cli.main")
    result = _lint_imports(tree_copy, tree_copy / "src")
    assert result.returncode != 0
    assert "gptkit.plugins is not allowed to import gptkit.cli" in result.stdout


def test_a_cycle_between_modules_breaks_the_contract(tree_copy: Path) -> None:
    # generate imports model; model importing generate closes a cycle.
    _add_import(tree_copy, "core/model.py", "import gptkit.core.generate")
    result = _lint_imports(tree_copy, tree_copy / "src")
    assert result.returncode != 0
    assert "No cycles are allowed in gptkit.core" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "message"),
    [
        # serve's HTTP modules reach the library through gptkit.api only
        (
            "serve/app.py",
            "import gptkit.core.tokenizer",
            "gptkit.serve is not allowed to import gptkit.core",
        ),
        (
            "serve/completions.py",
            "import gptkit.formats.models",
            "gptkit.serve is not allowed to import gptkit.formats",
        ),
        # the command line too (the registry and errors stay allowed)
        (
            "cli/generate.py",
            "import gptkit.core.model",
            "gptkit.cli is not allowed to import gptkit.core",
        ),
        (
            "cli/train.py",
            "import gptkit.runs.compose",
            "gptkit.cli is not allowed to import gptkit.runs",
        ),
    ],
)
def test_a_front_end_past_the_api_breaks_the_contract(
    tree_copy: Path, module: str, line: str, message: str
) -> None:
    _add_import(tree_copy, module, line)
    result = _lint_imports(tree_copy, tree_copy / "src")
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-2000:]


def test_the_serving_engine_may_import_the_core(tree_copy: Path) -> None:
    # serve/engine/ is the engine (it drives the model step by step), so the
    # front-end rule does not apply to it; the layers still do.
    _add_import(tree_copy, "serve/engine/rows.py", "import gptkit.core.tokenizer")
    assert _lint_imports(tree_copy, tree_copy / "src").returncode == 0


def _python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_the_core_stays_minimal() -> None:
    lines = sum(
        len(p.read_text(encoding="utf-8").splitlines())
        for p in _python_files(SRC / "core")
    )
    assert lines <= 6000, f"src/gptkit/core has {lines} lines"
    banned = re.compile(
        r"^\s*(import|from)\s+(fcntl|ctypes|uvicorn|starlette|matplotlib)\b|/proc/",
        re.M,
    )
    offenders = [
        str(p.relative_to(REPO))
        for p in _python_files(SRC / "core")
        if banned.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_command_line_reaches_the_core_only_for_plugins_and_errors() -> None:
    allowed = {"gptkit.core.registry"}
    found = {
        (p.name, m)
        for p in _python_files(SRC / "cli")
        for m in re.findall(r"from (gptkit\.core[\w.]*) import", p.read_text())
        if m not in allowed
    }
    assert found == set()


def test_the_layer_diagram_is_drawn_from_the_contract() -> None:
    sys.path.insert(0, str(REPO / "docs" / "hooks"))
    try:
        import layers
    finally:
        sys.path.pop(0)
    drawn = layers.mermaid(layers.contract_layers())
    for name in ("cli", "serve", "bench", "api", "runs", "plugins", "formats"):
        assert f'{name}["gptkit.{name}"]' in drawn
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert layers.MARKER in page
    assert "gptkit.core" in layers.on_page_markdown(page)
