import torch

from gptkit.core.config import PRESETS
from gptkit.core.model import GPTModel, KVCache
from tests.helpers import tiny_config, tiny_model


def test_book_parameter_names_in_creation_order():
    model = GPTModel(tiny_config(n_layers=1, qkv_bias=True))
    names = [name for name, _ in model.named_parameters()]
    assert names == [
        "tok_emb.weight",
        "pos_emb.weight",
        "trf_blocks.0.att.W_query.weight",
        "trf_blocks.0.att.W_query.bias",
        "trf_blocks.0.att.W_key.weight",
        "trf_blocks.0.att.W_key.bias",
        "trf_blocks.0.att.W_value.weight",
        "trf_blocks.0.att.W_value.bias",
        "trf_blocks.0.att.out_proj.weight",
        "trf_blocks.0.att.out_proj.bias",
        "trf_blocks.0.ff.layers.0.weight",
        "trf_blocks.0.ff.layers.0.bias",
        "trf_blocks.0.ff.layers.2.weight",
        "trf_blocks.0.ff.layers.2.bias",
        "trf_blocks.0.norm1.scale",
        "trf_blocks.0.norm1.shift",
        "trf_blocks.0.norm2.scale",
        "trf_blocks.0.norm2.shift",
        "final_norm.scale",
        "final_norm.shift",
        "out_head.weight",
    ]


def test_logits_shape_and_book_init_values():
    torch.manual_seed(123)
    model = GPTModel(PRESETS["tiny"])
    logits = model(torch.tensor([[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]))
    assert logits.shape == (2, 4, 50257)
    # PyTorch's default init: LayerNorm starts at scale 1, shift 0.
    assert torch.equal(model.final_norm.scale, torch.ones(64))


def _explicit_attention_reference(model, ids):
    """The book's attention (explicit mask + softmax), to check SDPA against."""

    cfg = model.cfg
    x = model.tok_emb(ids) + model.pos_emb(torch.arange(ids.shape[1]))
    for block in model.trf_blocks:
        h = block.norm1(x)
        att = block.att
        b, t, d = h.shape
        q = att.W_query(h).view(b, t, cfg.n_heads, -1).transpose(1, 2)
        k = att.W_key(h).view(b, t, cfg.n_heads, -1).transpose(1, 2)
        v = att.W_value(h).view(b, t, cfg.n_heads, -1).transpose(1, 2)
        scores = q @ k.transpose(2, 3)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(mask, float("-inf"))
        w = torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1)
        ctx = (w @ v).transpose(1, 2).reshape(b, t, d)
        x = x + att.out_proj(ctx)
        h = block.norm2(x)
        m = h.mean(-1, keepdim=True)
        var = h.var(-1, keepdim=True, unbiased=False)
        normed = (
            block.norm2.scale * (h - m) / torch.sqrt(var + 1e-5) + block.norm2.shift
        )
        ff = block.ff.layers
        hidden = ff[0](normed)
        gelu = (
            0.5
            * hidden
            * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (hidden + 0.044715 * hidden**3)))
        )
        x = x + ff[2](gelu)
    return model.out_head(model.final_norm(x))


def test_fused_attention_matches_the_books_explicit_attention():
    model = tiny_model()
    ids = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        assert torch.allclose(
            model(ids), _explicit_attention_reference(model, ids), atol=1e-5
        )


def test_kv_cache_gives_the_same_logits_as_a_full_pass():
    model = tiny_model()
    ids = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.allocate(model.cfg, 2, 20, "cpu", torch.float32)
        first = model(ids[:, :12], cache=cache)  # prefill
        rest = [model(ids[:, i : i + 1], cache=cache) for i in range(12, 17)]  # decode
        chunk = model(ids[:, 17:], cache=cache)  # a chunk after a prefix
    stepped = torch.cat([first, *rest, chunk], dim=1)
    assert cache.length == 20
    assert torch.allclose(full, stepped, atol=1e-5)


def test_cache_write_of_rows_at_one_position_is_the_scatter_as_a_slice():
    """Rows that agree on their next position (a decoding step, a prefill of
    equal rows) are written with a slice copy; the result is the scatter's."""
    cfg = tiny_config()
    k, v = torch.randn(2, 2, cfg.n_heads, 3, cfg.head_dim)
    caches = [KVCache.allocate(cfg, 2, 8, "cpu", torch.float32) for _ in range(2)]
    for cache in caches:
        cache.lengths = [4, 4]
    positions = torch.tensor([[4, 5, 6], [4, 5, 6]])
    got = caches[0].write(1, k, v, positions, span=7, start=4)
    want = caches[1].write(1, k, v, positions, span=7)
    assert torch.equal(caches[0].keys, caches[1].keys)
    assert torch.equal(caches[0].values, caches[1].values)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_cache_reorder_copies_rows_like_a_gather():
    """Beam search's reorder (only changed rows are copied) = a full gather,
    with swaps and a parent taken twice."""
    cfg = tiny_config()
    cache = KVCache.allocate(cfg, 4, 6, "cpu", torch.float32)
    cache.keys.normal_(), cache.values.normal_()
    cache.lengths = [5, 5, 5, 5]
    index = torch.tensor([0, 0, 3, 2])
    want_k, want_v = cache.keys[:, index].clone(), cache.values[:, index].clone()
    cache.reorder(index)
    assert torch.equal(cache.keys[:, :, :5], want_k[:, :, :5])
    assert torch.equal(cache.values[:, :, :5], want_v[:, :, :5])


def test_cache_reorder_copies_only_what_the_rows_do_not_share():
    """Slots below ``start`` (or the cache's ``shared``), which a moved row
    already holds as its source does, are not copied; rollbacks and refilled
    rows lower ``shared``."""
    cfg = tiny_config()
    cache = KVCache.allocate(cfg, 3, 8, "cpu", torch.float32)
    cache.keys.normal_(), cache.values.normal_()
    cache.keys[:, 1:, :4] = cache.keys[:, :1, :4]  # rows share slots 0..3
    cache.values[:, 1:, :4] = cache.values[:, :1, :4]
    cache.lengths, cache.shared = [6, 6, 6], 2
    index = torch.tensor([2, 0, 0])
    want_k, want_v = cache.keys[:, index].clone(), cache.values[:, index].clone()
    mark = float("inf")  # copied slots below 4 would overwrite the marks
    cache.keys[:, :, 3, 0, 0] = cache.values[:, :, 3, 0, 0] = mark
    cache.reorder(index, start=4)
    assert bool((cache.keys[:, :, 3, 0, 0] == mark).all())
    assert torch.equal(cache.keys[:, :, 4:6], want_k[:, :, 4:6])
    assert torch.equal(cache.values[:, :, 4:6], want_v[:, :, 4:6])
    assert cache.shared == 2  # kept: set by the cache's user
    cache.truncate([5, 1, 5])
    assert cache.shared == 1
    cache.set_length(0, 0)
    assert cache.shared == 0


def test_half_precision_decoding_attention_runs_in_float32_on_the_cpu():
    from gptkit.core.model import attention

    q = torch.randn(1, 4, 1, 16)
    k, v = torch.randn(2, 1, 4, 9, 16)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for dtype in (torch.bfloat16, torch.float16):
        half = [t.to(dtype) for t in (q, k, v)]
        got = attention(*half, None, 0.0)
        assert got.dtype == dtype
        exact = torch.nn.functional.scaled_dot_product_attention(
            *(t.float() for t in half)
        )
        assert torch.equal(got, exact.to(dtype))
        assert torch.allclose(got.float(), want, atol=2e-2)


def _decode(model, cache, ids):
    """Feed ``ids`` (1, T) one token at a time; the logits (1, T, V)."""
    return torch.cat(
        [model(ids[:, i : i + 1], cache=cache) for i in range(ids.shape[1])], 1
    )


def test_rows_of_one_cache_advance_independently():
    """Continuous batching's primitive: a row prefilled on its own (through a
    view of the shared cache) while another row is mid-decode, then both step
    together, gives each row the logits it gets alone."""
    model = tiny_model()
    a = torch.randint(0, 50257, (1, 9))
    b = torch.randint(0, 50257, (1, 5))
    with torch.no_grad():
        alone_a, alone_b = model(a), model(b)
        cache = KVCache.allocate(model.cfg, 2, 16, "cpu", torch.float32)
        row_a = cache.rows(0)
        prefill_a = model(a[:, :6], cache=row_a)
        cache.set_length(0, row_a.lengths[0])
        row_b = cache.rows(1)
        prefill_b = model(b[:, :2], cache=row_b)
        cache.set_length(1, row_b.lengths[0])
        assert cache.lengths == [6, 2]
        together = [
            model(torch.stack([a[0, i + 6 : i + 7], b[0, i + 2 : i + 3]]), cache=cache)
            for i in range(3)
        ]  # each (2, 1, V)
    got_a = torch.cat([prefill_a, *(t[:1] for t in together)], 1)
    got_b = torch.cat([prefill_b, *(t[1:] for t in together)], 1)
    assert cache.lengths == [9, 5]
    assert torch.allclose(got_a, alone_a, atol=1e-5)
    assert torch.allclose(got_b, alone_b, atol=1e-5)


def test_truncate_rolls_rejected_tokens_back():
    model = tiny_model()
    ids = torch.randint(0, 50257, (1, 12))
    wrong = torch.randint(0, 50257, (1, 3))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.allocate(model.cfg, 1, 16, "cpu", torch.float32)
        model(ids[:, :8], cache=cache)
        model(wrong, cache=cache)  # a draft's guesses, then rejected
        cache.truncate([8])
        rest = model(ids[:, 8:], cache=cache)
    assert torch.allclose(rest, full[:, 8:], atol=1e-5)


def test_static_cache_attends_over_its_whole_capacity_with_the_same_result():
    model = tiny_model()
    ids = torch.randint(0, 50257, (2, 10))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache.allocate(model.cfg, 2, 32, "cpu", torch.float32, static=True)
        first = model(ids[:, :4], cache=cache)
        rest = _decode(model, cache, ids[:, 4:])
    assert torch.allclose(torch.cat([first, rest], 1), full, atol=1e-5)


def test_logits_at_selects_one_position_per_row():
    model = tiny_model()
    ids = torch.randint(0, 50257, (2, 7))
    with torch.no_grad():
        full = model(ids)
        picked = model(ids, logits_at=torch.tensor([6, 2]))
    assert picked.shape == (2, 1, full.shape[-1])
    assert torch.allclose(picked[0, 0], full[0, 6], atol=1e-6)
    assert torch.allclose(picked[1, 0], full[1, 2], atol=1e-6)


def test_left_padding_with_mask_matches_unpadded():
    model = tiny_model()
    ids = torch.randint(0, 50257, (1, 10))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 10])
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(ids)
        masked = model(padded, attention_mask=mask, position_ids=positions)
    assert torch.allclose(plain, masked[:, 3:], atol=1e-5)
    assert torch.isfinite(masked).all()


def test_tied_embeddings_share_one_tensor():
    model = GPTModel(tiny_config(tie_embeddings=True))
    assert model.out_head.weight is model.tok_emb.weight
