"""The shell and Python blocks of the tutorials and guides run as written (on a
tiny configuration where a directive says so; see tests/doc_blocks.py), in page
order, each page in its own directory that starts with what the quickstart
leaves behind, ``runs/mini`` (a tiny model here), and a small ``notes/``
corpus. Blocks that cannot run here (a GPU, a download, several machines, hours
of compute) are skipped with the reason their directive gives."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.doc_blocks import Block, blocks, environment, run_block

PAGES = [
    *sorted((REPO / "docs" / "tutorials").glob("*.md")),
    *(
        REPO / "docs" / name
        for name in (
            "training.md",
            "prepare.md",
            "scaling.md",
            "precision.md",
            "samplers.md",
            "fast-inference.md",
            "serving.md",
            "weights.md",
            "benchmarks.md",
        )
    ),
    REPO / "docs" / "reference" / "run-directory.md",
    REPO / "docs" / "reference" / "python-api.md",
]
TINY_RUN = ["--preset", "tiny", "--max-steps", "4", "--eval-freq", "2"]


def _cases() -> list:
    cases = []
    for page in PAGES:
        if not page.is_file():
            continue
        for i, block in enumerate(blocks(page, REPO)):
            cases.append(pytest.param(block, id=f"{block.page}:{i}:{block.language}"))
    return cases


@pytest.fixture(scope="session")
def quickstart_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory as the quickstart leaves it, with tiny models."""
    state = tmp_path_factory.mktemp("quickstart")
    gptkit = [sys.executable, "-m", "gptkit"]
    subprocess.run(
        [*gptkit, "train", *TINY_RUN, "--eval-iter", "1", "--out", "runs/mini"],
        cwd=state,
        env=environment(REPO),
        check=True,
        capture_output=True,
        timeout=600,
    )
    import pydoc_data.topics

    notes = state / "notes"
    notes.mkdir()
    topics = list(pydoc_data.topics.topics.values())[:40]
    (notes / "topics.txt").write_text("\n\n".join(topics), encoding="utf-8")
    return state


@pytest.fixture(scope="session")
def page_dirs(quickstart_state: Path, tmp_path_factory: pytest.TempPathFactory):
    """One working directory per page, shared by its blocks (in page order)."""
    dirs: dict[str, Path] = {}

    def get(page: str) -> Path:
        if page not in dirs:
            target = tmp_path_factory.mktemp("page") / "work"
            shutil.copytree(quickstart_state, target)
            dirs[page] = target
        return dirs[page]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("block", _cases())
def test_documented_block_runs(block: Block, page_dirs, request) -> None:
    if block.skip:
        pytest.skip(f"{block.page}:{block.line}: {block.skip}")
    if "the-verdict" in block.code:
        request.getfixturevalue("verdict_path")  # skips without the book's text
    run_block(block, page_dirs(block.page), REPO)


def test_every_guide_has_blocks_the_tests_see() -> None:
    """A page listed here exists and its blocks parse (directives included)."""
    for page in PAGES:
        assert page.is_file(), page
        for block in blocks(page, REPO):
            block.runnable_code()  # every 'replace' matches
