"""What the hardware allows: memory bandwidth and matrix-multiply peak, and
how close decoding and training come to them.

- **Memory bandwidth** is measured with a copy of a 256 MiB tensor (much larger
  than any cache), counted as STREAM's "Copy" kernel counts it (McCalpin, 1995):
  bytes read + bytes written, best of 5. The benchmarks measure before and
  after their runs and keep the best (other processes only lower it).
- **Matrix-multiply peak** is measured with square GEMMs (2048 on a CPU, 8192 on
  a GPU) in each dtype, 2 n^3 floating-point operations each, best of 3.
- On a GPU listed in :data:`GPU_SPECS` the **vendor's datasheet** values are used
  instead (dense tensor-core figures, no 2:4 sparsity); the measured values are
  kept alongside.
- **Decode bound.** Generating one token at batch size 1 reads every weight once
  (the token and position embeddings: one row each; a tied head reads the whole
  embedding matrix), so tokens/s <= bandwidth / weight bytes. The KV cache read
  is left out (small next to the weights at these lengths).
- **MFU** (model FLOPs utilisation; Chowdhery et al., 2022, "PaLM", appendix B):
  achieved model FLOPs per second / peak. A training step costs 6 N FLOPs per
  token (forward 2 N, backward 4 N; Kaplan et al., 2020, "Scaling Laws for Neural
  Language Models", section 2.1) plus attention, 12 L d T per token (PaLM's
  12 L H Q T with H Q = d), where N counts the parameters used in matrix
  products: every weight except the position embedding, and the token embedding
  only through a tied head.

Torch is imported when used.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

#: dtype name -> matmul peak keys tried, in order
_PEAK_KEYS = {
    "fp32": ("fp32",),
    "tf32": ("tf32", "fp32"),
    "bf16": ("bf16",),
    "fp16": ("fp16",),
}


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's datasheet peaks: memory bandwidth (GB/s) and dense TFLOP/s."""

    name: str
    pattern: str  # regular expression matched against torch's device name
    bandwidth_gbs: float
    tflops: dict[str, float]
    source: str


_A100 = "NVIDIA A100 Tensor Core GPU datasheet (2021)"
_H100 = "NVIDIA H100 Tensor Core GPU datasheet (2023)"
_H100_NVL = "NVIDIA H100 NVL GPU product brief (2023)"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet (2024)"
_L40S = "NVIDIA L40S GPU datasheet (2023)"
_L4 = "NVIDIA L4 Tensor Core GPU datasheet (2023)"
_A10 = "NVIDIA A10 Tensor Core GPU datasheet (2021)"
_V100 = "NVIDIA Tesla V100 GPU datasheet (2020)"
_T4 = "NVIDIA T4 Tensor Core GPU datasheet (2019)"
_ADA = "NVIDIA Ada GPU architecture whitepaper v2.02, appendix (FP32 accumulate)"
# name, device-name pattern, GB/s, dense TFLOP/s fp32, tf32, bf16, fp16, source.
# Figures the datasheets give "with sparsity" are halved. Most specific first.
_TABLE: tuple[tuple[Any, ...], ...] = (
    ("H200 NVL", r"H200.*NVL", 4800, 60, 418, 836, 836, _H200),
    ("H200 SXM", r"H200", 4800, 67, 495, 989, 989, _H200),
    ("H100 NVL", r"H100.*NVL", 3900, 60, 418, 836, 836, _H100_NVL),
    ("H100 PCIe", r"H100.*PCIe", 2000, 51, 378, 756, 756, _H100),
    ("H100 SXM", r"H100", 3350, 67, 495, 989, 989, _H100),
    ("A100 80GB PCIe", r"A100 80GB PCIe", 1935, 19.5, 156, 312, 312, _A100),
    ("A100 80GB SXM", r"A100.*80GB", 2039, 19.5, 156, 312, 312, _A100),
    ("A100 40GB", r"A100", 1555, 19.5, 156, 312, 312, _A100),
    ("L40S", r"L40S", 864, 91.6, 183, 362, 362, _L40S),
    ("L4", r"\bL4\b", 300, 30.3, 60, 121, 121, _L4),
    ("A10", r"\bA10\b", 600, 31.2, 62.5, 125, 125, _A10),
    ("V100 SXM2", r"V100.*SXM2", 900, 15.7, None, None, 125, _V100),
    ("V100 PCIe", r"V100", 900, 14, None, None, 112, _V100),
    ("T4", r"\bT4\b", 320, 8.1, None, None, 65, _T4),
    ("RTX 4090", r"RTX 4090", 1008, 82.6, 82.6, 165.2, 165.2, _ADA),
)  # fmt: skip
#: Dense datasheet peaks of common GPUs.
GPU_SPECS: tuple[GpuSpec, ...] = tuple(
    GpuSpec(
        name,
        pattern,
        bandwidth,
        {
            k: v
            for k, v in zip(("fp32", "tf32", "bf16", "fp16"), peaks, strict=True)
            if v is not None
        },
        source,
    )
    for name, pattern, bandwidth, *peaks, source in _TABLE
)


def lookup_gpu(device_name: str) -> GpuSpec | None:
    """The datasheet entry for a device name such as ``NVIDIA H100 80GB HBM3``."""
    for spec in GPU_SPECS:
        if re.search(spec.pattern, device_name, flags=re.IGNORECASE):
            return spec
    return None


@dataclass
class Limits:
    """The peaks the benchmarks compare against, and where they come from."""

    device: str
    bandwidth_gbs: float
    tflops: dict[str, float]
    source: str  # "measured" or "datasheet: <name>, <document>"
    measured: dict[str, Any] = field(default_factory=dict)

    def peak_tflops(self, dtype: str) -> float | None:
        """The matmul peak for ``dtype`` (fp32 / tf32 / bf16 / fp16)."""
        for key in _PEAK_KEYS.get(dtype, (dtype,)):
            if key in self.tflops:
                return self.tflops[key]
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _best_seconds(fn: Any, device: Any, repeats: int) -> float:
    from gptkit.bench.measure import sync

    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_bandwidth(device: Any, mib: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth in GB/s (10^9 bytes): 2 x tensor bytes / best time."""
    import torch

    numel = mib * 1024 * 1024 // 4
    src = torch.ones(numel, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), device, repeats)
    return 2 * src.nbytes / seconds / 1e9


def measure_matmul(
    device: Any,
    dtype: str,
    n: int | None = None,
    repeats: int = 3,
    budget_s: float = 0.5,
) -> float:
    """Square-GEMM throughput in TFLOP/s for ``dtype`` (fp32, bf16, fp16): the
    best of ``repeats`` products.

    Without ``n`` the size adapts to the machine: from 256 it doubles (up to
    8192 on a GPU, 2048 elsewhere) while the next size's product is predicted
    to take under ``budget_s`` (8 times this size's best time: on a busy CPU
    one slow sample does not stop the doubling early), and the best rate of
    all sizes measured is returned (a small product runs below the peak; a
    CPU without bfloat16 units, where a 2048 bf16 product takes ~20 s, is
    measured in about a second rather than a minute).
    """
    import torch

    from gptkit.core.device import resolve_dtype

    kind = getattr(device, "type", str(device))
    g = torch.Generator(device="cpu").manual_seed(0)

    def square(size: int) -> tuple[Any, Any]:
        a = torch.randn(size, size, generator=g)
        b = torch.randn(size, size, generator=g)
        torch_dtype = resolve_dtype(dtype)
        return a.to(device, torch_dtype), b.to(device, torch_dtype)

    def rate(size: int) -> tuple[float, float]:
        seconds = _best_seconds(partial(torch.matmul, *square(size)), device, repeats)
        return 2 * size**3 / seconds / 1e12, seconds

    if n is not None:
        return rate(n)[0]
    limit = 8192 if kind == "cuda" else 2048
    size, best = 256, 0.0
    while True:
        tflops, seconds = rate(size)
        best = max(best, tflops)
        if size * 2 > limit or seconds * 8 > budget_s:
            return best
        size *= 2


_CACHE: dict[tuple[str, tuple[str, ...], int], Limits] = {}


def machine_limits(
    device: Any, dtypes: tuple[str, ...] = ("fp32", "bf16"), fresh: bool = False
) -> Limits:
    """Bandwidth and matmul peaks of ``device``: the datasheet's for a known GPU,
    else measured (with the current number of torch threads, so a CPU's peak
    fits the run it is compared with).

    Other processes can only lower a measured peak, so every measurement made
    in this process is kept (``measured["samples"]``) and the best is used;
    ``fresh=True`` measures again (the benchmarks do, after their runs) instead
    of returning the cached result.
    """
    import torch

    key = (str(device), tuple(sorted(dtypes)), torch.get_num_threads())
    cached = _CACHE.get(key)
    if cached is not None and not fresh:
        return cached
    samples: dict[str, list[float]] = (
        cached.measured["samples"]
        if cached is not None
        else {"bandwidth_gbs": [], **{f"tflops_{d}": [] for d in dtypes}}
    )
    samples["bandwidth_gbs"].append(round(measure_bandwidth(device), 2))
    for dtype in dtypes:
        samples[f"tflops_{dtype}"].append(round(measure_matmul(device, dtype), 4))
    tflops = {d: max(samples[f"tflops_{d}"]) for d in dtypes}
    measured: dict[str, Any] = {
        "bandwidth_gbs": max(samples["bandwidth_gbs"]),
        "tflops": tflops,
        "torch_threads": torch.get_num_threads(),
        "samples": samples,
    }
    kind = getattr(device, "type", str(device))
    spec = None
    if kind == "cuda":
        spec = lookup_gpu(torch.cuda.get_device_name(torch.device(device).index or 0))
    if spec is not None:
        limits = Limits(
            str(device),
            spec.bandwidth_gbs,
            dict(spec.tflops),
            f"datasheet: {spec.name}, {spec.source}",
            measured,
        )
    else:
        limits = Limits(
            str(device), measured["bandwidth_gbs"], dict(tflops), "measured", measured
        )
    _CACHE[key] = limits
    return limits


# -- model arithmetic -------------------------------------------------------------


def _unique_params(model: Any) -> dict[str, Any]:
    """name -> parameter, each shared tensor once (a tied head appears once)."""
    seen: set[int] = set()
    out = {}
    for name, param in model.named_parameters():
        if id(param) not in seen:
            seen.add(id(param))
            out[name] = param
    return out


def weight_bytes_per_token(model: Any) -> int:
    """Bytes of weights read to decode one token at batch size 1: every
    parameter and stored buffer (a quantized layer's integers, scales and zero
    points), except that the embeddings contribute one row each — unless the
    token embedding is also the output head (tied, not quantized), which reads
    all of it."""
    seen: set[int] = set()
    shared: set[int] = set()
    tensors = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = tensor.data_ptr()
        if key in seen:
            shared.add(key)
            continue
        seen.add(key)
        tensors.append((name, tensor))
    total = 0
    for name, tensor in tensors:
        size = tensor.numel() * tensor.element_size()
        embedding = name in ("pos_emb.weight", "tok_emb.weight")
        if embedding and tensor.data_ptr() not in shared:
            size = tensor.shape[1] * tensor.element_size()
        total += size
    return total


def matmul_parameters(model: Any) -> int:
    """N of the 6 N rule: parameters used in matrix products (all but the
    position embedding; the token embedding only as a tied head)."""
    cfg = model.cfg
    total = 0
    for name, param in _unique_params(model).items():
        if name == "pos_emb.weight":
            continue
        if name == "tok_emb.weight" and not cfg.tie_embeddings:
            continue
        total += param.numel()
    return total


def training_flops_per_token(model: Any, seq_len: int) -> float:
    """6 N + 12 L d T (Kaplan et al., 2020; PaLM appendix B)."""
    cfg = model.cfg
    return 6 * matmul_parameters(model) + 12 * cfg.n_layers * cfg.emb_dim * seq_len


def bandwidth_bound(bytes_per_token: int, bandwidth_gbs: float) -> float:
    """Upper bound on decode tokens/s: bandwidth / bytes read per token."""
    return bandwidth_gbs * 1e9 / bytes_per_token
