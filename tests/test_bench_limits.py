"""The machine's limits and the model arithmetic behind the bandwidth bound and
MFU, and the shared measurement code the benchmark suites import."""

from __future__ import annotations

import pytest

from gptkit.bench.limits import (
    Limits,
    bandwidth_bound,
    lookup_gpu,
    matmul_parameters,
    measure_bandwidth,
    measure_matmul,
    training_flops_per_token,
    weight_bytes_per_token,
)
from gptkit.bench.measure import PeakMemory, measure
from tests.helpers import tiny_model


@pytest.mark.parametrize(
    ("device_name", "spec"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ],
)
def test_gpu_datasheet_lookup(device_name, spec):
    found = lookup_gpu(device_name)
    assert found is not None and found.name == spec
    assert found.bandwidth_gbs > 0 and found.tflops["fp32"] > 0 and found.source


def test_unknown_gpu_is_measured_instead():
    assert lookup_gpu("Some Future Accelerator") is None


def test_peak_lookup_falls_back_from_tf32_to_fp32():
    limits = Limits("cpu", 10.0, {"fp32": 0.1, "bf16": 0.3}, "measured")
    assert limits.peak_tflops("tf32") == 0.1
    assert limits.peak_tflops("bf16") == 0.3
    assert limits.peak_tflops("fp16") is None


def test_weight_bytes_per_token_untied_and_tied():
    # fp32: 4 bytes per parameter; the embeddings contribute one row (d) each,
    # except a tied head, which reads the whole token embedding.
    untied = tiny_model()  # vocab 50257, context 32, width 32
    cfg = untied.cfg
    d, v, t = cfg.emb_dim, cfg.vocab_size, cfg.context_length
    total = sum(p.numel() for p in untied.parameters())
    assert weight_bytes_per_token(untied) == 4 * (total - (v - 1) * d - (t - 1) * d)
    tied = tiny_model(tie_embeddings=True)
    total = sum(p.numel() for p in tied.parameters())  # the shared matrix once
    assert weight_bytes_per_token(tied) == 4 * (total - (t - 1) * d)


def test_training_flops_follow_6n_plus_attention():
    model = tiny_model()
    cfg = model.cfg
    # N: everything but the position and (untied) token embeddings
    n = (
        sum(p.numel() for p in model.parameters())
        - (cfg.vocab_size + cfg.context_length) * cfg.emb_dim
    )
    assert matmul_parameters(model) == n
    assert (
        training_flops_per_token(model, 32)
        == 6 * n + 12 * cfg.n_layers * cfg.emb_dim * 32
    )


def test_bandwidth_bound():
    # 10 GB/s over 500 MB per token: 20 tokens/s at most
    assert bandwidth_bound(500_000_000, 10.0) == pytest.approx(20.0)


def test_measured_limits_are_positive():
    assert measure_bandwidth("cpu", mib=8, repeats=2) > 0
    assert measure_matmul("cpu", "fp32", n=128, repeats=2) > 0


def test_matmul_size_grows_past_a_slow_sample(monkeypatch):
    """A busy CPU: the first call of each size is slow (descheduled), the best
    of the repeats is not; the size still doubles to the limit and the best
    rate of all sizes is returned."""
    import gptkit.bench.limits as limits

    sizes: list[int] = []

    def fake_best(fn, device, repeats):
        size = fn.args[0].shape[0]
        sizes.append(size)
        return 2 * size**3 / (1e12 * (size / 2048))  # faster per FLOP when larger

    monkeypatch.setattr(limits, "_best_seconds", fake_best)
    tflops = limits.measure_matmul("cpu", "fp32", budget_s=10.0)
    assert sizes == [256, 512, 1024, 2048]
    assert tflops == pytest.approx(1.0)
    # a product predicted to exceed the budget is not run
    sizes.clear()
    limits.measure_matmul("cpu", "fp32", budget_s=1e-9)
    assert sizes == [256]


def test_peak_memory_sees_a_large_allocation():
    import torch

    with PeakMemory("cpu") as memory:
        block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
        del block
    if memory.peak_bytes is None:
        pytest.skip(memory.source)
    assert memory.peak_mib >= 60


def test_measure_discards_warmup_and_keeps_every_repeat():
    calls = []

    def run() -> int:
        calls.append(1)
        return 10

    m = measure("x", run, repeats=3, warmup=2)
    assert len(calls) == 5 and len(m.seconds) == 3 and m.tokens == 10
    assert m.tokens_per_s == pytest.approx(10 / min(m.seconds))


def test_the_benchmark_suite_and_the_command_share_their_runners():
    """benchmarks/test_sampling.py imports gptkit.bench.runners, the runners
    the command uses; each trace times every token."""
    import gptkit.bench.runners as bench_runners
    import gptkit.bench.runners as suite
    from gptkit.core.registry import get_registry

    model = tiny_model(tie_embeddings=True)
    samplers = get_registry().samplers
    greedy, beam = samplers.create("greedy"), samplers.create("beam", num_beams=2)
    assert suite.gptkit_runner(model, greedy, suite.PROMPT, 5)() == 5
    for sampler in (greedy, beam):
        trace = bench_runners.trace_gptkit(model, sampler, suite.PROMPT, 5, seed=0)
        assert len(trace.new_ids) == 5 and len(trace.ticks) == 5
        assert trace.ttft is not None and 0 < trace.ttft <= trace.seconds
        assert len(trace.latencies) == 4
    no_cache = bench_runners.trace_no_cache(model, suite.PROMPT, 5)
    greedy_ids = bench_runners.trace_gptkit(model, greedy, suite.PROMPT, 5).new_ids
    assert no_cache.new_ids == greedy_ids
