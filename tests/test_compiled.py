"""The compiled decoding step (torch.compile through a static KV cache) gives
the eager path's greedy tokens, for float and quantized models."""

from __future__ import annotations

import shutil

import pytest
import torch

from gptkit.core.config import get_preset
from gptkit.core.generate import generate_tokens
from gptkit.core.model import GPTModel
from gptkit.core.quantize import quantize_model
from gptkit.core.registry import get_registry

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("cc") is None and shutil.which("gcc") is None,
        reason="Inductor on the CPU needs a C++ compiler",
    ),
]


def _model(quantize: str | None = None) -> GPTModel:
    torch.manual_seed(0)
    cfg = get_preset("tiny").replace(vocab_size=512, context_length=32)
    model = GPTModel(cfg).eval()
    return quantize_model(model, quantize) if quantize else model


def test_compiled_greedy_equals_eager():
    """int8: the quantized layers' kernels run as custom operators inside the
    compiled graph; everything else is the float model's graph."""
    model = _model("int8")
    greedy = get_registry().samplers.create("greedy")
    prompts = [[1, 2, 3, 4], [5, 6]]  # two rows of different lengths
    # 40 new tokens: past the 32-token context, the sliding window takes over
    eager = generate_tokens(model, prompts, greedy, max_new_tokens=40, eos_id=None)
    compiled = generate_tokens(
        model, prompts, greedy, max_new_tokens=40, eos_id=None, compiled=True
    )
    assert [r.new_ids for r in compiled] == [r.new_ids for r in eager]
    # the step is compiled once and reused
    again = generate_tokens(
        model, [[7, 8, 9]], greedy, max_new_tokens=5, eos_id=None, compiled=True
    )
    assert len(again[0].new_ids) == 5
