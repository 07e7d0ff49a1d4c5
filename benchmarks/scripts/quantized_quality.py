# ruff: noqa: E402, B905  (a measurement script: set-up before imports, table rows)
"""Quality of quantized weights on a model trained here: held-out perplexity and
greedy agreement over 20 prompts (20 new tokens each)."""

import json
import math
import sys
import time

import torch

torch.set_num_threads(1)
import gptkit
from gptkit.core.generate import generate_tokens
from gptkit.core.registry import get_registry
from gptkit.core.tokenizer import encode

weights = sys.argv[1]
specs = [None, "int8", "int4", "int4:group_size=32", "int4:head=int4"]
docs = list(get_registry().corpora.create("python-docs").documents())
text = "<|endoftext|>".join(docs)
val = text[int(len(text) * 0.9) :]
ids = encode(val)
prompts = [ids[i * 500 : i * 500 + 8] for i in range(20)]
greedy = get_registry().samplers.create("greedy")
rows, ref = [], None
for spec in specs:
    t = time.time()
    lm = gptkit.load(weights, device="cpu", quantize=spec)
    res = lm.evaluate("python-docs", eval_iter=20)
    out = [
        r.new_ids
        for r in generate_tokens(
            lm.model, prompts, greedy, max_new_tokens=20, eos_id=None
        )
    ]
    if ref is None:
        ref = out
    agree = sum(a == b for r, o in zip(ref, out) for a, b in zip(r, o)) / 400
    row = {
        "quantize": spec or "fp32",
        "val_loss": res["val_loss"],
        "val_ppl": math.exp(res["val_loss"]),
        "greedy_agreement": agree,
        "seconds": round(time.time() - t, 1),
    }
    rows.append(row)
    print(json.dumps(row), flush=True)
base = rows[0]["val_ppl"]
for r in rows:
    r["ppl_vs_fp32"] = r["val_ppl"] / base - 1
print(json.dumps(rows, indent=1))
