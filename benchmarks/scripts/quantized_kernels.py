# ruff: noqa: E402, E501, B023  (a measurement script: set-up before imports, table rows)
"""Per-layer time of one decoding step's matrix products (batch 1, one thread):
fp32 F.linear vs the int8/int4 backends, on GPT-2 124M's shapes."""

import time
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")
from gptkit.plugins.quantizers.linear import Int4Linear, Int8Linear

torch.set_num_threads(1)


def tm(f, n):
    with torch.inference_mode():
        for _ in range(3):
            f()
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                f()
            ts.append((time.perf_counter() - t) / n)
    return min(ts) * 1e6


ao = None
try:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    ao = True
except Exception:
    pass
print(
    "| layer (out x in) | fp32 | int8 gptkit AVX2 | int8 aten `_weight_int8pack_mm` | int8 torchao | int4 gptkit AVX2 (g64) | int4 aten `_weight_int4pack_mm_for_cpu` |"
)
print("|---|---|---|---|---|---|---|")
for N, K in [(768, 768), (3072, 768), (768, 3072), (50257, 768)]:
    lin = nn.Linear(K, N, bias=False)
    x = torch.randn(1, K)
    n = 5 if N > 10000 else 50
    cells = [tm(lambda: lin(x), n)]
    for make in (
        lambda: Int8Linear.from_linear(lin, "native"),
        lambda: Int8Linear.from_linear(lin, "aten"),
    ):
        m = make()
        cells.append(tm(lambda: m(x), n))
    if ao:
        m = nn.Sequential(nn.Linear(K, N, bias=False))
        m[0].weight.data.copy_(lin.weight.data)
        quantize_(m, Int8WeightOnlyConfig())
        cells.append(tm(lambda: m(x), n))
    else:
        cells.append(float("nan"))
    for make in (
        lambda: Int4Linear.from_linear(lin, 64, "native"),
        lambda: Int4Linear.from_linear(lin, 64, "aten"),
    ):
        m = make()
        cells.append(tm(lambda: m(x), n))
    base = cells[0]
    print(
        f"| {N} x {K} | "
        + " | ".join(
            f"{c:,.0f} µs" + ("" if i == 0 else f" ({base / c:.2f}x)")
            for i, c in enumerate(cells)
        )
        + " |",
        flush=True,
    )
