"""examples/notebooks/chapter5.ipynb runs headless (nbclient) on a shortened
configuration, and its outputs show what the chapter shows."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

NOTEBOOK = REPO / "examples" / "notebooks" / "chapter5.ipynb"
SHORT = 'PRESET = "tiny"\nCONTEXT_LENGTH = 64\nEPOCHS = 1\nRUN_DIR = "runs/chapter5"\n'


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_chapter5_notebook_runs_headless(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [params] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = SHORT
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    train, plot, losses, samples, decoding, reload, resume = code[1:]
    assert "Ep 1 (Step 000000): Train loss" in _text(train)
    assert "Run('runs/chapter5'" in _text(train)
    assert any("image/png" in out.get("data", {}) for out in plot.outputs)
    assert "perplexity at the end" in _text(losses)
    assert "epoch 1:" in _text(samples)
    lines = _text(decoding).splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        "greedy",
        "top-k, T=1.4",
        "top-p 0.9",
        "beam, 4",
    ]
    assert "'val_loss'" in _text(reload)
    assert "the reloaded model generates the same text: True" in _text(reload)
    assert "Run('runs/chapter5'" in _text(resume)
    assert (tmp_path / "runs/chapter5/plots/loss.png").is_file()
