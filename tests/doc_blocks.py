"""The code blocks of the documentation pages and the directives that say how
the tests run them.

A fenced ``bash`` or ``python`` block runs as written unless HTML comments
directly above it say otherwise (they are invisible on the site):

``<!-- doctest: skip REASON -->``
    the block is not run (a GPU, a download, several machines, hours of
    compute); the reason is reported as the test's skip reason.
``<!-- doctest: append PREFIX: ARGS -->``
    every command line that starts with PREFIX (``gptkit train``) gets ARGS
    appended: the documented command on a tiny configuration.
``<!-- doctest: replace OLD => NEW ;; OLD2 => NEW2 -->``
    textual replacements; each OLD must occur in the block, so a changed
    example fails instead of silently running something else.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)
DIRECTIVE = re.compile(r"<!-- doctest: (skip|append|replace)\b(.*?)-->", re.S)


@dataclass
class Block:
    """One fenced block of a page and how to run it."""

    page: str
    language: str
    code: str
    line: int
    skip: str | None = None
    appends: list[tuple[str, str]] = field(default_factory=list)
    replaces: list[tuple[str, str]] = field(default_factory=list)

    def runnable_code(self) -> str:
        """The code with its replacements and appended arguments applied."""
        code = self.code
        for old, new in self.replaces:
            if old not in code:
                raise AssertionError(
                    f"{self.page}:{self.line}: 'replace' expects {old!r} in the block"
                )
            code = code.replace(old, new)
        if self.appends:
            code = _append_args(code, self.appends)
        return code


def blocks(path: Path, root: Path) -> list[Block]:
    """The bash and python blocks of a markdown page, with their directives."""
    text = path.read_text(encoding="utf-8")
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").split("\n")
        comments = []
        while before and before[-1].startswith("<!-- doctest:"):
            comments.insert(0, before.pop())
        block = Block(
            page=str(path.relative_to(root)),
            language=match.group(1),
            code=match.group(2),
            line=text[: match.start()].count("\n") + 1,
        )
        for comment in comments:
            found = DIRECTIVE.fullmatch(comment.strip())
            if not found:
                raise AssertionError(f"{block.page}: bad directive {comment!r}")
            kind, arg = found.group(1), found.group(2).strip()
            if kind == "skip":
                block.skip = arg or "not runnable in the tests"
            elif kind == "append":
                prefix, _, args = arg.partition(":")
                block.appends.append((prefix.strip(), args.strip()))
            else:
                for pair in arg.split(" ;; "):
                    old, sep, new = pair.partition(" => ")
                    assert sep, f"{block.page}: replace needs 'OLD => NEW': {pair!r}"
                    block.replaces.append((old.strip(), new.strip()))
        out.append(block)
    return out


def _append_args(code: str, appends: list[tuple[str, str]]) -> str:
    """Append ARGS to the logical lines (continuations joined) that start with
    a prefix, before any trailing comment."""
    logical: list[str] = []
    pending = ""
    for line in code.split("\n"):
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out = []
    for line in logical:
        command, comment = _split_comment(line)
        for prefix, args in appends:
            if command.strip().startswith(prefix):
                command = command.rstrip() + " " + args
        out.append(command + (f"  {comment}" if comment else ""))
    return "\n".join(out)


def _split_comment(line: str) -> tuple[str, str]:
    """``cmd args  # note`` -> (``cmd args``, ``# note``), quotes respected."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line, ""


def environment(root: Path) -> dict[str, str]:
    """The environment a reader's shell would have: the venv's scripts first
    on PATH, this checkout's sources importable, offline."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    src = str(root / "src")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (src, env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("COLUMNS", None)
    return env


def run_block(block: Block, cwd: Path, root: Path, timeout: float = 600) -> None:
    """Run one block in ``cwd``; fail with its output when it fails."""
    code = block.runnable_code()
    if block.language == "bash":
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
    else:
        argv = [sys.executable, "-c", code]
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=environment(root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{block.page}:{block.line} ({block.language}) exited"
            f" {result.returncode}\n--- code ---\n{code}\n--- stdout ---\n"
            f"{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
        )


def shell_words(line: str) -> list[str]:
    """A command line's words, as the shell splits them."""
    return shlex.split(line, comments=True)
