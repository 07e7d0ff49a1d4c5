"""Shared fixtures. Tests run with strict plugins, offline, with gptkit's cache in
a temporary directory seeded with the book's text (so ``--corpus the-verdict``
works without a download)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"

os.environ["GPTKIT_STRICT_PLUGINS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def verdict_path() -> Path:
    if not SHARED_VERDICT.is_file():
        pytest.skip(f"the book's text is not at {SHARED_VERDICT}")
    return SHARED_VERDICT


@pytest.fixture(scope="session")
def verdict_text(verdict_path: Path) -> str:
    return verdict_path.read_text(encoding="utf-8")


@pytest.fixture(autouse=True, scope="session")
def gptkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("gptkit-cache")
    os.environ["GPTKIT_CACHE_DIR"] = str(cache)
    if SHARED_VERDICT.is_file():
        (cache / "corpora").mkdir()
        shutil.copy(SHARED_VERDICT, cache / "corpora" / "the-verdict.txt")
    return cache


@pytest.fixture(autouse=True)
def _fresh_registry():
    from gptkit.core.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def cli_run():
    """Run ``gptkit`` in-process; returns click's Result (stdout/stderr apart)."""
    from click.testing import CliRunner

    from gptkit.cli.main import cli

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return run


def assert_clean_error(result, *fragments: str) -> None:
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gptkit: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
