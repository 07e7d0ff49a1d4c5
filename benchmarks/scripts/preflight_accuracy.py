"""How close the memory preflight's estimates are to what the work really uses.

Each case runs in a fresh process (so one case's allocator state does not
reach another): the peak resident memory the work adds (``ru_maxrss`` after it
minus before it) against :mod:`gptkit.runs.preflight`'s estimate for it.

    python benchmarks/scripts/preflight_accuracy.py           # a table, CPU, fp32

The figures quoted in the README's Reliability section come from this script.
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = [
    # kind, drop rate, context, batch (training, evaluation) or beams (generation)
    ("train", 0.0, 256, 8),
    ("train", 0.1, 256, 8),
    ("train", 0.1, 1024, 2),
    ("eval", 0.0, 512, 8),
    ("generate", 0.0, 128, 4),
    ("generate", 0.0, 256, 16),
    ("generate", 0.0, 1024, 1),
]

CHILD = """
import json, resource, sys, torch
from gptkit.core.config import GPTConfig
from gptkit.core.model import GPTModel
from gptkit.runs import preflight as pf
from gptkit.core.loss import batch_loss

kind, drop, ctx, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
cfg = GPTConfig(emb_dim=256, n_layers=4, n_heads=4, context_length=ctx, drop_rate=drop)
x = torch.randint(0, cfg.vocab_size, (n, ctx))
torch.randn(1000).sum()  # the allocator's and thread pool's first use
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
if kind == "train":
    from gptkit.core.training.trainer import make_adamw
    model = GPTModel(cfg)
    opt = make_adamw(model.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(2):
        batch_loss(x, x, model, torch.device("cpu")).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    est = pf.training_estimate(cfg, batch_size=n)
elif kind == "eval":
    model = GPTModel(cfg).eval()
    with torch.no_grad():
        batch_loss(x, x, model, torch.device("cpu"))
    est = pf.evaluation_estimate(cfg, batch_size=n)
else:
    from gptkit.core.generate import generate_tokens
    from gptkit.core.registry import get_registry
    model = GPTModel(cfg).eval()
    samplers = get_registry().samplers
    sampler = (
        samplers.create("beam", num_beams=n) if n > 1
        else samplers.create("top-k", top_k=50)
    )
    generate_tokens(model, [[1, 2, 3, 4, 5] * 4], sampler, max_new_tokens=ctx)
    est = pf.generation_estimate(
        cfg, prompts=1, prompt_tokens=20, max_new_tokens=ctx, num_beams=n
    )
print(json.dumps({"measured": rss() - base, "estimate": est.total,
                  "largest": est.largest().name}))
"""


def main() -> None:
    from gptkit.runs.preflight import format_bytes

    print(f"{'case':<28} {'measured':>10} {'estimate':>10} {'ratio':>6}  largest part")
    for kind, drop, ctx, n in CASES:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(drop), str(ctx), str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout)
        what = "beams" if kind == "generate" else "batch"
        name = f"{kind} drop={drop} ctx={ctx} {what}={n}"
        ratio = row["estimate"] / row["measured"]
        print(
            f"{name:<28} {format_bytes(row['measured']):>10}"
            f" {format_bytes(row['estimate']):>10} {ratio:>6.2f}  {row['largest']}"
        )


if __name__ == "__main__":
    main()
