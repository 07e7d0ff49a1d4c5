"""The decoding attention kernel (gptkit.system.decode_attention): one query
per row over a KV cache equals PyTorch's SDPA for every cache dtype, grouped
heads, masks, thread counts and both cache layouts (the same bits from each),
and the model falls back to SDPA where the kernel cannot run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptkit.bench.measure import torch_threads
from gptkit.core.config import GPTConfig
from gptkit.core.generate import generate_tokens
from gptkit.core.model import GPTModel
from gptkit.plugins.samplers.token import Greedy
from gptkit.system import decode_attention

needs_kernel = pytest.mark.skipif(
    decode_attention.library() is None, reason="no AVX2 CPU or no C compiler here"
)


def _sdpa(q, k, v, mask):
    group = q.shape[1] // k.shape[1]
    k, v = (x.repeat_interleave(group, dim=1).float() for x in (k, v))
    return F.scaled_dot_product_attention(q.float(), k, v, attn_mask=mask)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("rows", "heads", "kv_heads", "keys", "dim"),
    [(1, 12, 12, 37, 64), (2, 8, 2, 100, 128), (3, 4, 1, 9, 16), (1, 2, 2, 1, 8)],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_one_query_attention_equals_sdpa(
    dtype, rows, heads, kv_heads, keys, dim, threads
):
    gen = torch.Generator().manual_seed(0)
    # a view of the first `keys` slots of a larger cache, as decoding reads it
    cache = torch.randn(2, rows, kv_heads, 128, dim, generator=gen).to(dtype)
    k, v = cache[0, :, :, :keys], cache[1, :, :, :keys]
    q = torch.randn(rows, 1, heads, dim, generator=gen).to(dtype).transpose(1, 2)
    lengths = torch.tensor([keys, max(1, keys // 2), 3][:rows])
    mask = torch.arange(keys)[None, None, None, :] < lengths[:, None, None, None]
    with torch_threads(threads):
        for m in (None, mask):
            with torch.inference_mode():
                out = decode_attention.attend(q, k, v, m)
            assert out is not None and out.dtype == dtype and out.shape == q.shape
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            torch.testing.assert_close(
                out.float(), _sdpa(q, k, v, m), atol=tol, rtol=tol
            )


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("rows", "heads", "kv_heads", "keys", "dim"),
    [(4, 12, 12, 100, 64), (1, 12, 12, 37, 64), (2, 8, 2, 19, 128), (3, 6, 3, 9, 72)],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_position_major_cache_gives_the_head_major_bits(
    dtype, rows, heads, kv_heads, keys, dim, threads
):
    """KVCache's layout (each position's heads side by side, swept once per
    row or per share of its heads) gives the same bits as a cache with each
    head's positions together (read head by head)."""
    gen = torch.Generator().manual_seed(1)
    head_major = torch.randn(2, rows, kv_heads, 130, dim, generator=gen).to(dtype)
    position_major = head_major.transpose(2, 3).contiguous().transpose(2, 3)
    q = torch.randn(rows, 1, heads, dim, generator=gen).to(dtype).transpose(1, 2)
    lengths = torch.tensor([keys, max(1, keys // 2), 3, 1][:rows])
    mask = torch.arange(keys)[None, None, None, :] < lengths[:, None, None, None]
    mask[0, ..., :] = False  # a row with every key masked: zeros
    with torch_threads(threads):
        for m in (None, mask):
            with torch.inference_mode():
                got = [
                    decode_attention.attend(q, c[0, :, :, :keys], c[1, :, :, :keys], m)
                    for c in (head_major, position_major)
                ]
            assert got[0] is not None and torch.equal(got[0], got[1])
        # a row with every key masked gives zeros, whatever its values hold
        for c in (head_major, position_major):
            c[1, 0, :, 0, 0] = float("inf")
            with torch.inference_mode():
                out = decode_attention.attend(
                    q, c[0, :, :, :keys], c[1, :, :, :keys], mask
                )
            assert torch.equal(out[0], torch.zeros_like(out[0]))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("rows", "heads", "kv_heads", "keys", "dim", "shared"),
    [
        (4, 12, 12, 107, 64, 55),  # beam search: 4 rows sharing their history
        (4, 12, 12, 107, 64, 107),  # every position shared
        (4, 12, 12, 107, 64, 24),  # a short history: threads split the rows
        (2, 8, 2, 19, 128, 8),  # grouped heads, one shared block
        (3, 6, 3, 40, 72, 37),  # a boundary inside a block of 8
        (16, 4, 4, 9, 16, 9),  # 16 rows, the tail after the blocks
        (4, 12, 12, 30, 64, 7),  # under one block: nothing read once
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_shared_prefix_read_once_gives_each_rows_bits(
    dtype, rows, heads, kv_heads, keys, dim, shared, threads
):
    """Rows whose first ``shared`` positions are copies of one row's (beam
    search's common history) are read there once for all rows, with the same
    bits as each row reading its own copy."""
    gen = torch.Generator().manual_seed(2)
    cache = torch.randn(2, rows, 130, kv_heads, dim, generator=gen).to(dtype)
    cache[:, 1:, :shared] = cache[:, :1, :shared]  # the copies
    k, v = (c.transpose(1, 2)[:, :, :keys] for c in cache)  # KVCache's views
    q = torch.randn(rows, 1, heads, dim, generator=gen).to(dtype).transpose(1, 2)
    mask = torch.ones(rows, 1, 1, keys, dtype=torch.bool)
    mask[-1, ..., keys // 2 :] = False  # a row of its own length
    with torch_threads(threads):
        for m in (None, mask):
            with torch.inference_mode():
                own = decode_attention.attend(q, k, v, m)
                once = decode_attention.attend(q, k, v, m, shared=shared)
            assert own is not None and torch.equal(own, once)
        # the shared positions are really read from the first row only (where
        # every thread has rows of its own)
        cache[:, 1:, :8] = float("nan")
        with torch.inference_mode():
            once = decode_attention.attend(q, k, v, None, shared=shared)
        assert bool(once.isfinite().all()) == (shared >= 8 and rows >= threads)


def test_inputs_the_kernel_does_not_take_are_left_to_sdpa():
    q, kv = torch.randn(1, 2, 2, 8), torch.randn(1, 2, 5, 8)
    assert decode_attention.attend(q, kv, kv, None) is None  # two queries
    q1 = torch.randn(1, 2, 1, 12)
    assert decode_attention.attend(q1, q1, q1, None) is None  # head size % 8
    grad = torch.randn(1, 2, 1, 8, requires_grad=True)
    assert decode_attention.attend(grad, kv, kv, None) is None


def _tiny(**kw) -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, context_length=64, emb_dim=32, n_heads=4,
                    n_layers=2, drop_rate=0.0, **kw)  # fmt: skip
    return GPTModel(cfg).eval()


@needs_kernel
def test_greedy_decoding_is_the_same_with_and_without_the_kernel(monkeypatch):
    model = _tiny()
    # rows of different lengths: left padding, so the steps carry a mask
    prompts = [[5, 17, 3, 42, 8], [9, 1], [60, 61, 62]]
    calls = []
    attend = decode_attention.attend

    def counted(*args):
        calls.append(1)
        return attend(*args)

    monkeypatch.setattr(decode_attention, "attend", counted)
    with_kernel = generate_tokens(
        model, prompts, Greedy(), max_new_tokens=20, eos_id=None
    )
    assert calls, "the decoding steps did not reach the kernel"
    monkeypatch.setattr(decode_attention, "attend", lambda *args: None)
    without = generate_tokens(model, prompts, Greedy(), max_new_tokens=20, eos_id=None)
    assert [r.new_ids for r in with_kernel] == [r.new_ids for r in without]
