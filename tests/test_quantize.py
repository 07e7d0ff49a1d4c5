"""Weight-only quantization: the formats, the kernels against each other, the
whole-model swap, quantized checkpoints, and quality on a trained model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gptkit.core.generate import generate_tokens
from gptkit.core.model import GPTModel
from gptkit.core.quantize import parse_spec, quantize_model
from gptkit.core.registry import get_registry
from gptkit.errors import GptkitError, OptionError
from gptkit.formats.models import model_from_spec
from gptkit.formats.quantized import save_quantized
from gptkit.plugins.quantizers import formats, native
from gptkit.plugins.quantizers.linear import Int4Linear, Int8Linear
from tests.trained_models import held_out_loss, split_ids, target_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

needs_native = pytest.mark.skipif(
    native.library("fma-avx2") is None, reason="no AVX2 CPU or no C compiler here"
)


def test_int8_round_trip_error_is_half_a_step():
    w = torch.randn(37, 48)
    q, scale = formats.quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (37,)
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-6).all())


@pytest.mark.parametrize("group", [32, 64])
def test_int4_round_trip(group):
    """Inside each group's chosen range the error is at most half a step, and
    the range search never does worse than the plain min-max range."""
    w = torch.randn(20, 128)
    packed, scale, zero = formats.quantize_int4(w, group)
    assert packed.shape == (20, 64) and packed.dtype == torch.uint8
    back = formats.dequantize_int4(packed, scale, zero, torch.float32)
    step = scale.repeat_interleave(group, dim=1)  # (N, K)
    low = zero.repeat_interleave(group, dim=1)
    inside = (w >= low) & (w <= low + 15 * step)
    assert bool(((back - w).abs()[inside] <= step[inside] / 2 + 1e-6).all())
    groups = w.view(20, -1, group)  # (N, G, group)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    plain_step = (hi - lo) / 15
    plain = torch.round((groups - lo) / plain_step) * plain_step + lo
    plain_error = ((plain - groups) ** 2).sum(-1)
    error = ((back.view(20, -1, group) - groups) ** 2).sum(-1)
    assert bool((error <= plain_error + 1e-6).all())
    assert float(error.sum()) < float(plain_error.sum())


def test_int4_packing_is_invertible_and_two_per_byte():
    q = torch.randint(0, 16, (3, 64), dtype=torch.uint8)
    packed = formats.pack_int4(q)
    assert torch.equal(formats.unpack_int4(packed), q)
    # byte j of a 32-weight run: weight j low, weight j + 16 high
    assert int(packed[0, 0]) == int(q[0, 0]) | (int(q[0, 16]) << 4)


def test_formats_run_on_the_meta_device():
    w = torch.empty(64, 96, device="meta")
    q, scale = formats.quantize_int8(w)
    assert q.is_meta and q.dtype == torch.int8
    packed, scale, _ = formats.quantize_int4(w, 32)
    assert packed.is_meta and packed.shape == (64, 48) and scale.shape == (64, 3)


def _linear(n: int, k: int, bias: bool = True) -> nn.Linear:
    torch.manual_seed(n * 1000 + k)
    return nn.Linear(k, n, bias=bias)


@needs_native
@pytest.mark.parametrize("rows", [1, 3, 17])  # 17: past the native kernels' limit
@pytest.mark.parametrize(("n", "k"), [(50, 64), (7, 32), (130, 256)])
def test_backends_agree(rows, n, k):
    lin = _linear(n, k)
    x = torch.randn(rows, k)
    for make in (
        lambda b: Int8Linear.from_linear(lin, b),
        lambda b: Int4Linear.from_linear(lin, 32, b),
    ):
        reference = make("torch")(x)
        for backend in ("fma-avx2", "aten"):  # float activations, as "torch"
            got = make(backend)(x)
            torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)
        # the integer kernels quantize the activations: "reference" is theirs
        # (tests/test_quantize_kernels.py), and it stays close to "torch"
        got = make("native")(x)
        assert (got - reference).norm() / reference.norm() < 0.02


def test_quantized_layer_is_close_to_the_float_one():
    lin = _linear(64, 128)
    x = torch.randn(4, 128)
    exact = lin(x)
    for layer, tol in (
        (Int8Linear.from_linear(lin), 0.02),
        (Int4Linear.from_linear(lin, 32), 0.15),
    ):
        err = (layer(x) - exact).norm() / exact.norm()
        assert err < tol, (type(layer).__name__, float(err))


def test_every_linear_and_the_tied_head_are_quantized(tiny_cfg):
    model = GPTModel(tiny_cfg.replace(tie_embeddings=True)).eval()
    quantize_model(model, "int8")
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.out_head, Int8Linear)
    assert model.tok_emb.weight.dtype == torch.float32  # the lookup stays float
    assert model.quantization == {"method": "int8", "options": {"backend": "auto"}}
    with pytest.raises(GptkitError, match="already quantized"):
        quantize_model(model, "int4")


def test_specs_and_options():
    assert parse_spec("int4:group_size=32,backend=torch") == (
        "int4",
        {"group_size": "32", "backend": "torch"},
    )
    model = GPTModel(get_tiny())
    quantize_model(model, "int4:group_size=32")
    assert model.trf_blocks[0].att.W_query.group_size == 32
    assert isinstance(model.out_head, Int8Linear)  # head=int8 by default
    with pytest.raises(OptionError, match="group_size"):
        quantize_model(GPTModel(get_tiny()), "int4", group_size=48)
    with pytest.raises(GptkitError, match="unknown quantizer 'fp3'"):
        quantize_model(GPTModel(get_tiny()), "fp3")
    with pytest.raises(GptkitError, match="does not divide"):
        quantize_model(
            GPTModel(get_tiny().replace(emb_dim=96, n_heads=2)), "int4:group_size=64"
        )


def get_tiny():
    from gptkit.core.config import get_preset

    return get_preset("tiny")


@pytest.fixture
def tiny_cfg():
    return get_tiny()


@pytest.mark.parametrize("spec", ["int8", "int4:group_size=32"])
def test_saved_quantized_weights_load_without_quantizing_again(
    spec, tmp_path, monkeypatch
):
    torch.manual_seed(0)
    model = quantize_model(
        GPTModel(get_tiny().replace(tie_embeddings=True)).eval(), spec
    )
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(ids)
    path = save_quantized(model, tmp_path / "q")

    def meta_only(original):
        def quantize(weight, *args):
            assert weight.is_meta, "real weights quantized again"
            return original(weight, *args)

        return quantize

    for name in ("quantize_int8", "quantize_int4"):
        monkeypatch.setattr(formats, name, meta_only(getattr(formats, name)))
    loaded, _ = model_from_spec(str(path))
    assert loaded.quantization == model.quantization
    with torch.no_grad():
        assert torch.equal(loaded(ids), expected)
    # asking for the same method again is fine; another one is a clear error
    model_from_spec(str(path), quantize=spec.split(":")[0])
    other = "int4" if spec == "int8" else "int8"
    with pytest.raises(GptkitError, match="already quantized"):
        model_from_spec(str(path), quantize=other)
    with pytest.raises(GptkitError, match="not empty"):
        save_quantized(model, path)


def test_float_checkpoint_is_quantized_on_load(tmp_path):
    from gptkit.core.checkpoints.native import save_checkpoint

    model = GPTModel(get_tiny())
    ckpt = save_checkpoint(tmp_path / "ckpts", 1, model, model.cfg)
    loaded, _ = model_from_spec(str(ckpt), quantize="int8")
    assert isinstance(loaded.trf_blocks[0].att.W_query, Int8Linear)


def test_quantizers_are_listed():
    assert {"int8", "int4"} <= set(get_registry().quantizers.names())


# -- quality on a trained model -------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    return target_model()


def _quantized_copy(model: GPTModel, spec: str) -> GPTModel:
    copy = GPTModel(model.cfg).eval()
    copy.load_state_dict(model.state_dict())
    return quantize_model(copy, spec)


def _greedy(model: GPTModel, prompts: list[list[int]], n: int) -> list[list[int]]:
    greedy = get_registry().samplers.create("greedy")
    out = generate_tokens(model, prompts, greedy, max_new_tokens=n, eos_id=None)
    return [r.new_ids for r in out]


@pytest.mark.slow
def test_quality_on_a_trained_model(trained):
    """Held-out perplexity within 1% (int8) and 5% (int4) of float32; greedy
    continuations of 20 prompts agree on >= 90% of tokens for int8."""
    base = math.exp(held_out_loss(trained))
    held_out = split_ids()[1]
    prompts = [held_out[i * 20 : i * 20 + 8].tolist() for i in range(20)]
    reference = _greedy(trained, prompts, 20)
    for spec, ppl_tol in (("int8", 0.01), ("int4", 0.05)):
        quantized = _quantized_copy(trained, spec)
        ppl = math.exp(held_out_loss(quantized))
        assert abs(ppl / base - 1) < ppl_tol, (spec, ppl, base)
        if spec == "int8":
            got = _greedy(quantized, prompts, 20)
            same = sum(
                a == b
                for ref_row, got_row in zip(reference, got, strict=True)
                for a, b in zip(ref_row, got_row, strict=True)
            )
            assert same / 400 >= 0.9, same
