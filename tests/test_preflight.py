"""The memory preflight: its estimates match what the code allocates, and a
request that cannot fit is refused in one line naming the settings to lower."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gptkit.core.config import GPTConfig
from gptkit.core.model import GPTModel, KVCache
from gptkit.core.options import parse_size
from gptkit.errors import GptkitError
from gptkit.runs.preflight import (
    MemoryPreflightError,
    check_memory,
    evaluation_estimate,
    format_bytes,
    generation_estimate,
    training_estimate,
)
from gptkit.system.memory import cpu_free_memory
from tests.conftest import REPO

TINY = GPTConfig(emb_dim=64, n_layers=2, n_heads=4, context_length=64, vocab_size=500)


def part(estimate, name: str) -> int:
    return next(p.nbytes for p in estimate.parts if p.name == name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GB", 8 * 10**9),
        ("512MiB", 512 << 20),
        ("1.5e9", 1_500_000_000),
        (" 2 gib ", 2 << 30),
        ("1000", 1000),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "8 parsecs", "-1GB", "0", ""])
def test_parse_size_refuses_nonsense(text) -> None:
    with pytest.raises(GptkitError, match="max_memory"):
        parse_size(text)


@pytest.mark.parametrize("tied", [False, True])
def test_weights_part_is_the_model_size(tied: bool) -> None:
    cfg = TINY.replace(tie_embeddings=tied, qkv_bias=tied)
    model = GPTModel(cfg)
    params = {p.data_ptr(): p for p in model.parameters()}  # a tied head once
    actual = sum(p.numel() * p.element_size() for p in params.values())
    assert part(evaluation_estimate(cfg, batch_size=1), "weights") == actual
    assert part(training_estimate(cfg, batch_size=1), "weights") == actual


@pytest.mark.parametrize(("beams", "new"), [(1, 10), (3, 200)])
def test_kv_cache_part_is_what_the_engine_allocates(beams: int, new: int) -> None:
    prompt = 5
    est = generation_estimate(
        TINY, prompts=2, prompt_tokens=prompt, max_new_tokens=new, num_beams=beams
    )
    capacity = min(prompt + new, TINY.context_length)
    cache = KVCache.allocate(TINY, 2 * beams, capacity, "cpu", torch.float32)
    actual = sum(t.numel() * t.element_size() for t in (cache.keys, cache.values))
    assert part(est, "key/value cache") == actual


def test_a_request_within_max_memory_passes() -> None:
    check_memory(training_estimate(TINY, batch_size=2), "cpu", max_memory="1GB")


def test_max_memory_refusal_names_the_setting_to_lower() -> None:
    cfg = TINY.replace(context_length=4096, vocab_size=50257, drop_rate=0.0)
    est = training_estimate(cfg, batch_size=64)
    with pytest.raises(MemoryPreflightError) as info:
        check_memory(est, "cpu", max_memory="100MB")
    message = str(info.value)
    assert "\n" not in message
    assert "max_memory is 95.4 MiB" in message
    assert format_bytes(est.total) in message
    assert "logits" in message  # the largest part is named first
    assert "lower batch_size or context_length or raise max_memory" in message
    assert info.value.settings == ("batch_size", "context_length", "max_memory")


def test_hundred_thousand_beams_exceed_any_machine() -> None:
    cfg = GPTConfig(emb_dim=256, n_layers=4, n_heads=4, context_length=256)
    est = generation_estimate(
        cfg, prompts=1, prompt_tokens=4, max_new_tokens=50, num_beams=100_000
    )
    with pytest.raises(MemoryPreflightError) as info:
        check_memory(est, "cpu")
    assert "num_beams" in info.value.settings
    assert "on cpu" in str(info.value)


def test_cpu_free_memory_is_plausible() -> None:
    free, source = cpu_free_memory()
    if free is None:
        pytest.skip(source)
    assert 0 < free
    if os.path.exists("/proc/meminfo"):
        total = int(open("/proc/meminfo").readline().split()[1]) * 1024
        assert free <= total


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc: Linux")
def test_an_address_space_limit_counts() -> None:
    script = textwrap.dedent(
        """
        import json, resource
        from gptkit.system.memory import cpu_free_memory
        size = 0
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                size = int(line.split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (300 << 20), -1))
        print(json.dumps(cpu_free_memory()))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env
    )
    free, source = json.loads(out.stdout)
    assert "ulimit -v" in source
    assert 200 << 20 < free <= 300 << 20


MEASURE = textwrap.dedent(
    """
    import json, sys, torch
    from gptkit.core.config import GPTConfig
    from gptkit.core.loss import batch_loss
    from gptkit.core.model import GPTModel
    from gptkit.core.training.trainer import make_adamw
    torch.set_num_threads(1)
    cfg = GPTConfig(emb_dim=64, n_layers=2, n_heads=4, context_length=64,
                    drop_rate=0.0)
    x = torch.randint(0, cfg.vocab_size, (4, cfg.context_length))
    torch.randn(1000).sum()  # the allocator's and thread pool's first use

    def peak_rss():  # VmHWM: this process's own peak (ru_maxrss would carry
        # the forked parent's peak over the exec)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    base = peak_rss()
    model = GPTModel(cfg)
    opt = make_adamw(model.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(2):
        batch_loss(x, x, model, torch.device("cpu")).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(peak_rss() - base)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/status: Linux")
def test_training_estimate_is_close_to_the_measured_peak() -> None:
    """Two real AdamW steps: the estimate is within 35% of the peak resident
    memory they added (neither refusing runs that fit nor missing most of it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, env=env
    )
    measured = int(out.stdout)
    cfg = GPTConfig(emb_dim=64, n_layers=2, n_heads=4, context_length=64)
    est = training_estimate(cfg.replace(drop_rate=0.0), batch_size=4).total
    assert 0.65 < est / measured < 1.35, (format_bytes(est), format_bytes(measured))
