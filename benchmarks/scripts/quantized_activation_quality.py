# ruff: noqa: E402, E501, B905  (a measurement script: set-up before imports, table rows)
"""Quality of the integer kernels (weights *and* activations in int8) on a model
trained here: held-out perplexity and greedy agreement with float32.

The model is the test suite's trained target (tests/trained_models.py: CPython
documentation corpus, dense vocabulary, a few hundred AdamW steps). Perplexity
is measured on whole held-out sequences, where the layers would take the float
path, so it uses ``backend=reference`` (the kernels' arithmetic in PyTorch:
activations quantized in blocks of 32) next to ``backend=torch`` (weight-only,
float activations); greedy continuations (20 prompts x 20 tokens) run one row
per step, so with ``backend=auto`` they go through the kernel this machine
chose, and with each kernel set forced.

    python benchmarks/scripts/quantized_activation_quality.py
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
torch.set_num_threads(1)
from tests.trained_models import held_out_loss, split_ids, target_model

from gptkit.core.generate import generate_tokens
from gptkit.core.model import GPTModel
from gptkit.core.quantize import quantize_model
from gptkit.core.registry import get_registry
from gptkit.plugins.quantizers import native

trained = target_model()
base_loss = held_out_loss(trained)
held_out = split_ids()[1]
prompts = [held_out[i * 20 : i * 20 + 8].tolist() for i in range(20)]
greedy = get_registry().samplers.create("greedy")


def continuations(model):
    out = generate_tokens(model, prompts, greedy, max_new_tokens=20, eos_id=None)
    return [t for r in out for t in r.new_ids]


reference = continuations(trained)


def copy(spec):
    model = GPTModel(trained.cfg).eval()
    model.load_state_dict(trained.state_dict())
    return quantize_model(model, spec) if spec else model


print(
    "| weights | activations | backend | val loss | perplexity vs fp32 | greedy agreement |"
)
print("|---|---|---|---|---|---|")
print(f"| fp32 | fp32 | - | {base_loss:.4f} | +0.00% | 100.0% |")
for method in ("int8", "int4"):
    rows = [("torch", "fp32"), ("reference", "int8 (blocks of 32)")]
    rows += [
        (k, "int8 (blocks of 32)" if k != "fma-avx2" else "fp32")
        for k in native.available(method)
    ]
    rows += [("auto", "as chosen here")]
    for backend, acts in rows:
        sep = ":" if ":" not in method else ","
        model = copy(f"{method}{sep}backend={backend}")
        if backend in ("torch", "reference"):
            loss = held_out_loss(model)
            ppl = f"{loss:.4f} | {math.exp(loss - base_loss) - 1:+.2%}"
        else:
            ppl = {"int8": "- | (as reference)", "fp32": "- | (as torch)"}.get(
                acts[:4], "- | (reference or torch, as chosen)"
            )
        got = continuations(model)
        agree = sum(a == b for a, b in zip(reference, got)) / len(reference)
        print(f"| {method} | {acts} | {backend} | {ppl} | {agree:.1%} |", flush=True)
