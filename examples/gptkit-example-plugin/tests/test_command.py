"""``gptkit corpus-stats`` (added with ``register_commands``) and the rule that
importing the plugin's hook module stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys


def test_counts_a_plugin_corpus(gptkit_cli, registry, gptkit_tokenizer):
    result = gptkit_cli("corpus-stats", "us-documents", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    docs = list(registry.corpora.create("us-documents").documents())
    assert row["documents"] == 3
    assert row["characters"] == sum(len(d) for d in docs)
    assert row["tokens"] == sum(len(gptkit_tokenizer.encode(d)) for d in docs)


def test_prints_a_table_and_reads_files(gptkit_cli, tmp_path):
    (tmp_path / "a.txt").write_text("one two three", encoding="utf-8")
    result = gptkit_cli("corpus-stats", str(tmp_path / "a.txt"))
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:5] == [
        "corpus",
        "documents",
        "characters",
        "words",
        "tokens",
    ]
    assert row.split()[1:5] == ["1", "13", "3", "3"]


def test_a_missing_file_is_one_clear_error(gptkit_cli, tmp_path):
    result = gptkit_cli("corpus-stats", str(tmp_path / "missing.txt"))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("gptkit: error: corpus file not found")


def test_the_hook_module_does_not_import_torch():
    code = "import sys, gptkit_example; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
