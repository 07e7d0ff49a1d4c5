"""Throughput and peak memory of ``gptkit prepare`` on a generated corpus.

Writes a corpus of English-like text (words drawn from "The Verdict" when the
book's text is at ../shared/data, else a small built-in list; lines and blank-
line paragraphs), several files plus one large file that must be cut into
shards, then runs ``python -m gptkit prepare`` on it in a fresh process for each
``--workers`` value and reports:

- MB/s: input bytes / wall time of the whole command (imports included);
- peak RSS: the largest sum of the resident memory of the command and its
  worker processes, sampled every 50 ms from /proc (Linux), and the largest
  single process (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).

The corpus and the prepared output are deleted at the end (``--keep`` keeps
them).

    python benchmarks/scripts/prepare_throughput.py   # 512 MB, 2 workers
    python benchmarks/scripts/prepare_throughput.py --mb 2048 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VERDICT = REPO.parent / "shared" / "data" / "the-verdict.txt"
FALLBACK_WORDS = (
    "the of and to in a is that for it as was with be by on not he I this are or"
    " his from at which but have an they you were her she there one all we their"
    " painting, studio. Gisburn said: \"Yes\" -- 1908 42 don't it's well-known"
).split()


def vocabulary() -> np.ndarray:
    words = VERDICT.read_text().split() if VERDICT.is_file() else FALLBACK_WORDS
    return np.array(words, dtype=object)


def write_text(path: Path, size: int, rng: np.random.Generator) -> None:
    """About ``size`` bytes of words: a newline every ~14 words, a blank line
    every ~8 lines."""
    words = vocabulary()
    seps = np.array([" ", "\n", "\n\n"], dtype=object)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            n = 200_000
            chunk = words[rng.integers(0, len(words), n)]
            kind = rng.choice(3, size=n, p=[1 - 1 / 14, 1 / 14 * 7 / 8, 1 / 14 / 8])
            text = "".join((chunk + seps[kind]).tolist())
            f.write(text)
            written += len(text.encode("utf-8"))


def generate(root: Path, total_mb: int, seed: int = 0) -> int:
    """Files of the corpus: one quarter in a single file, the rest in 24."""
    rng = np.random.default_rng(seed)
    total = total_mb * 1_000_000
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / "big.txt", total // 4, rng)
    for i in range(24):
        write_text(root / f"part-{i:02d}.txt", (total - total // 4) // 24, rng)
    return sum(p.stat().st_size for p in root.glob("*.txt"))


def tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (KiB), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        proc = int(entry.name)
        children.setdefault(int(fields.get("PPid", "0").strip()), []).append(proc)
        rss[proc] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [pid]
    while stack:
        proc = stack.pop()
        total += rss.get(proc, 0)
        stack.extend(children.get(proc, []))
    return total


def run_prepare(corpus: Path, out: Path, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [
        sys.executable, "-m", "gptkit", "prepare", str(corpus), "--out", str(out),
        "--workers", str(workers), "--no-progress", "--json",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kib(proc.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"gptkit prepare failed ({proc.returncode})")
    meta = json.loads(stdout)
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "mb_per_s": round(meta["bytes"] / 1e6 / seconds, 2),
        "tokens": meta["tokens"],
        "peak_rss_tree_mib": round(peak / 1024, 1),
        "peak_rss_largest_process_mib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="corpus size (MB)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--dir", type=Path, help="where to write (default: a tmp dir)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="gptkit-prepare-bench-"))
    corpus = root / "corpus"
    try:
        started = time.perf_counter()
        size = generate(corpus, args.mb)
        print(
            f"corpus: {size / 1e6:.0f} MB in 25 files"
            f" (generated in {time.perf_counter() - started:.0f}s)",
            flush=True,
        )
        for workers in args.workers:
            out = root / f"prepared-{workers}"
            result = run_prepare(corpus, out, workers)
            print(json.dumps({"input_mb": round(size / 1e6, 1), **result}), flush=True)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
