"""The helpers of the llama.cpp comparison (benchmarks/scripts/llamacpp_compare.py)
that need neither llama.cpp nor torch: the exported config's ``n_ctx``, finding
the converter, the decode rate, greedy agreement, the GGUF type summary and the
table."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "scripts" / "llamacpp_compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("llamacpp_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_add_n_ctx_copies_n_positions_once(compare, tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", "n_positions": 1024}))
    assert compare.add_n_ctx(path)["n_ctx"] == 1024
    assert json.loads(path.read_text())["n_ctx"] == 1024
    path.write_text(json.dumps({"n_positions": 1024, "n_ctx": 512}))
    assert compare.add_n_ctx(path)["n_ctx"] == 512  # an existing n_ctx is kept
    path.write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="n_positions"):
        compare.add_n_ctx(path)


def test_find_converter_in_a_checkout_or_an_unpacked_sdist(compare, tmp_path) -> None:
    assert compare.find_converter([tmp_path]) is None
    sdist = tmp_path / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    sdist.mkdir(parents=True)
    (sdist / "convert_hf_to_gguf.py").write_text("")
    found = sdist / "convert_hf_to_gguf.py"
    assert compare.find_converter([tmp_path / "missing", tmp_path]) == found
    assert compare.find_converter([tmp_path / "llama_cpp_python-0.3.36"]) == found
    assert compare.find_converter([sdist]) == found


def test_decode_rate_excludes_the_prefill(compare) -> None:
    # first token after a 1 s prefill, then one token every 0.1 s
    assert compare.decode_rate([1.0, 1.1, 1.2, 1.3, 1.4]) == pytest.approx(10.0)
    assert compare.decode_rate([1.0]) is None
    assert compare.decode_rate([]) is None


def test_agreement_counts_prefix_and_equal_positions(compare) -> None:
    assert compare.agreement([1, 2, 3, 4], [1, 2, 9, 4]) == {
        "common_prefix": 2,
        "equal_positions": 3,
        "compared": 4,
    }
    assert compare.agreement([1, 2], [1, 2, 3])["common_prefix"] == 2


def test_summarize_types_finds_the_tied_head(compare) -> None:
    types = {
        "token_embd.weight": "Q6_K",
        "position_embd.weight": "F32",
        "blk.0.attn_qkv.weight": "Q4_0",
        "blk.0.attn_qkv.bias": "F32",
        "blk.0.attn_norm.weight": "F32",
        "blk.0.ffn_up.weight": "Q4_0",
    }
    summary = compare.summarize_types(types)
    assert summary["head"] == "Q6_K" and summary["head_tied"]
    assert summary["matrices"] == {"Q6_K": 1, "F32": 1, "Q4_0": 2}
    untied = compare.summarize_types({**types, "output.weight": "Q8_0"})
    assert untied["head"] == "Q8_0" and not untied["head_tied"]


def test_markdown_table_has_a_line_per_row(compare) -> None:
    row = {
        "threads": 1,
        "gptkit": "int8",
        "llamacpp": "q8_0",
        "gptkit_best": 60.0,
        "gptkit_median": 55.0,
        "llamacpp_best": 75.0,
        "llamacpp_median": 70.0,
        "ratio_best": 0.8,
        "ratio_median": 55.0 / 70.0,
        "agreement": {"common_prefix": 5, "equal_positions": 7, "compared": 10},
    }
    lines = compare.markdown_table([row, {**row, "threads": 2}]).splitlines()
    assert len(lines) == 4
    assert (
        "| 1 | int8 | 60.0 | 55.0 | q8_0 | 75.0 | 70.0 | **0.80×** | 0.79×" in lines[2]
    )
    assert "5/10 common prefix" in lines[2]


def test_logit_agreement(compare) -> None:
    a = [0.0, 2.0, 1.0, -1.0]
    same = compare.logit_agreement(a, a, k=2)
    assert same == {
        "max_abs_diff": 0.0,
        "max_rel_diff": 0.0,
        "argmax_equal": True,
        "top2_shared": 2,
    }
    moved = compare.logit_agreement([0.0, 1.0, 2.5, -1.0], a, k=2)
    assert moved["max_abs_diff"] == pytest.approx(1.5)
    assert moved["max_rel_diff"] == pytest.approx(0.75)
    assert not moved["argmax_equal"] and moved["top2_shared"] == 2
    with pytest.raises(ValueError, match="different lengths"):
        compare.logit_agreement([1.0], a)
    table = compare.logits_table(
        {
            "int8": {
                "reference": "gptkit fp32",
                "gptkit_vs_llamacpp": {**same, "top10_shared": 10},
                "gptkit_vs_reference": same,
                "llamacpp_vs_reference": moved,
            }
        }
    )
    assert "| int8 | 0.00% | same | 10/10 | 0.00% | 75.00% |" in table


def test_vendored_commit_from_the_sdist_changelog(compare, tmp_path) -> None:
    converter = tmp_path / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    converter.parent.mkdir(parents=True)
    converter.write_text("")
    assert compare.vendored_commit(converter) is None
    (tmp_path / "CHANGELOG.md").write_text(
        "## [0.3.36]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@0c1e57098\n"
        "## [0.3.35]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@4df29be4f\n"
    )
    assert compare.vendored_commit(converter) == "0c1e57098"
    assert compare.vendored_commit(None) is None
