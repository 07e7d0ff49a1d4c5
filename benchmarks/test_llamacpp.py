"""gptkit's decoding against llama.cpp's on the same GPT-2 124M weights (issue
20): gptkit fp32 / bf16 / int8 / int4 against llama.cpp f32 / bf16 / q8_0 /
q4_0, greedy, alternated rounds, each row a ratio gptkit / llama.cpp (target
≥ 0.8×). An optional baseline: skipped where ``llama-cpp-python`` (and the
llama.cpp sources with ``convert_hf_to_gguf.py``) are not installed.

    pip install 'gptkit[llamacpp]'    # CMAKE_ARGS="-DGGML_NATIVE=ON", builds llama.cpp
    pip download --no-deps --no-binary :all: llama-cpp-python -d llamacpp-src
    tar xzf llamacpp-src/llama_cpp_python-*.tar.gz -C llamacpp-src
    LLAMACPP_SRC=llamacpp-src pytest benchmarks/test_llamacpp.py -s

``GPTKIT_BENCH_TOKENS`` (200), ``GPTKIT_BENCH_ROUNDS`` (3) and
``GPTKIT_BENCH_THREADS`` (``1,2``) size the run; the full record (table, JSON,
provenance) is ``python benchmarks/scripts/llamacpp_compare.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest

from benchmarks.conftest import RESULTS, ratio

pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed (pip install 'gptkit[llamacpp]'):"
    " the llama.cpp comparison is an optional baseline",
)
pytest.importorskip("gguf", reason="the gguf package is not installed")

from benchmarks.scripts import llamacpp_compare

TARGET = 0.8


def test_gptkit_against_llamacpp(tmp_path_factory) -> None:
    source = os.environ.get("LLAMACPP_SRC")
    if not source or llamacpp_compare.find_converter([source]) is None:
        pytest.skip(
            "set LLAMACPP_SRC to an unpacked llama-cpp-python sdist or a llama.cpp"
            " checkout (for convert_hf_to_gguf.py)"
        )
    args = argparse.Namespace(
        workdir=os.environ.get("GPTKIT_LLAMACPP_WORKDIR")
        or str(tmp_path_factory.mktemp("llamacpp")),
        llamacpp_src=source,
        threads=[
            int(t) for t in os.environ.get("GPTKIT_BENCH_THREADS", "1,2").split(",")
        ],
        rounds=int(os.environ.get("GPTKIT_BENCH_ROUNDS", "3")),
        max_new_tokens=int(os.environ.get("GPTKIT_BENCH_TOKENS", "200")),
        warmup_tokens=32,
        formats=list(llamacpp_compare.PAIRS),
        seed=0,
        prompt_ids=list(llamacpp_compare.DEFAULT_PROMPT),
    )
    result = llamacpp_compare.compare(
        args, lambda text: print(text, file=sys.stderr, flush=True)
    )
    for row in result["rows"]:
        t = row["threads"]
        mine = f"gptkit {row['gptkit']} @{t}t (median)"
        theirs = f"llama.cpp {row['llamacpp']} @{t}t (median)"
        RESULTS[mine] = row["gptkit_median"]
        RESULTS[theirs] = row["llamacpp_median"]
        ratio(mine, theirs, TARGET)
    print()
    print(llamacpp_compare.markdown_table(result["rows"]))
    assert all(
        row["gptkit_best"] > 0 and row["llamacpp_best"] > 0 for row in result["rows"]
    )
