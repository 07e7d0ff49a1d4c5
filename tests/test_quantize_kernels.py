"""The quantized kernels: every instruction-set path this machine runs agrees
with its PyTorch reference (layer outputs and greedy tokens of a tiny model),
the fallback without native kernels works, and the measured kernel choice is
cached per CPU and version."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gptkit.core.generate import generate_tokens
from gptkit.core.model import GPTModel
from gptkit.core.quantize import quantize_model
from gptkit.core.registry import get_registry
from gptkit.plugins.quantizers import native, tuning
from gptkit.plugins.quantizers.linear import (
    KERNELS,
    Int4Linear,
    Int8Linear,
    quantize_activations,
)
from gptkit.system import cpu

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: kernel set -> the PyTorch backend computing the same arithmetic
REFERENCE = {"avx512vnni": "reference", "avx2": "reference", "fma-avx2": "torch"}
RUNNABLE = [k for k in KERNELS if native.library(k) is not None]


def _linear(n: int, k: int) -> nn.Linear:
    torch.manual_seed(n * 1000 + k)
    return nn.Linear(k, n)


def test_activation_quantization_matches_the_kernels():
    x = torch.randn(3, 96) * torch.linspace(0.1, 10, 96)
    x[1, :32] = 0  # an all-zero block: scale 0, no division by zero
    q, d = quantize_activations(x)
    assert q.abs().max() <= 127 and torch.equal(q, q.round())
    err = (q * d[..., None]).reshape(3, 96) - x
    assert (err.abs().reshape(3, 3, 32) <= d[..., None] / 2 + 1e-6).all()
    for name in ("avx2", "avx512vnni"):
        lib = native.library(name)
        if lib is None:
            continue
        got_q = torch.empty(3, 96, dtype=torch.int8)
        got_d = torch.empty(3, 3)
        lib.gk_quantize_rows(x.data_ptr(), 3, 96, got_q.data_ptr(), got_d.data_ptr())
        assert torch.equal(got_q.float(), q.reshape(3, 96)), name
        assert torch.equal(got_d, d), name


@pytest.mark.skipif(not RUNNABLE, reason="no native kernels build on this machine")
@pytest.mark.parametrize("kernel", RUNNABLE)
@pytest.mark.parametrize("rows", [1, 3, 4, 6, 16])
@pytest.mark.parametrize(("n", "k"), [(50, 64), (7, 32), (130, 256), (9, 96)])
def test_kernels_agree_with_their_reference(kernel, rows, n, k):
    lin = _linear(n, k)
    x = torch.randn(rows, k)
    reference = REFERENCE[kernel]
    for make in (
        lambda b: Int8Linear.from_linear(lin, b),
        lambda b: Int4Linear.from_linear(lin, 32, b),
        lambda b: Int4Linear.from_linear(lin, 64, b) if k % 64 == 0 else None,
    ):
        if make(reference) is None:
            continue
        expected = make(reference)(x)
        got = make(kernel)(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not RUNNABLE, reason="no native kernels build on this machine")
@pytest.mark.parametrize("kernel", RUNNABLE)
def test_a_row_gets_the_same_bits_alone_or_in_a_batch(kernel):
    """Rows share each weight load (up to 4 per pass) but keep their own
    arithmetic: a beam's or a batch row's outputs equal a lone row's, bit for
    bit, whatever the rows beside it."""
    lin = _linear(130, 256)
    x = torch.randn(7, 256)
    for layer in (
        Int8Linear.from_linear(lin, kernel),
        Int4Linear.from_linear(lin, 32, kernel),
    ):
        together = layer(x)
        for i in range(7):
            assert torch.equal(together[i : i + 1], layer(x[i : i + 1]))


def _greedy(model: GPTModel, n: int = 12) -> list[list[int]]:
    greedy = get_registry().samplers.create("greedy")
    prompts = [[5, 6, 7, 8], [100, 3, 42]]
    out = generate_tokens(model, prompts, greedy, max_new_tokens=n, eos_id=None)
    return [r.new_ids for r in out]


def _tiny_model() -> GPTModel:
    from gptkit.core.config import get_preset

    torch.manual_seed(0)
    return GPTModel(get_preset("tiny").replace(tie_embeddings=True)).eval()


@pytest.mark.skipif(not RUNNABLE, reason="no native kernels build on this machine")
@pytest.mark.parametrize("kernel", RUNNABLE)
@pytest.mark.parametrize("method", ["int8", "int4:group_size=32"])
def test_greedy_tokens_match_the_reference(kernel, method):
    base = _tiny_model()
    state = base.state_dict()
    tokens = {}
    for backend in (kernel, REFERENCE[kernel]):
        model = GPTModel(base.cfg).eval()
        model.load_state_dict(state)
        quantize_model(
            model, f"{method}{',' if ':' in method else ':'}backend={backend}"
        )
        tokens[backend] = _greedy(model)
    assert tokens[kernel] == tokens[REFERENCE[kernel]]


@pytest.fixture
def no_native(monkeypatch):
    """A machine where no kernel builds (no AVX2 or no compiler)."""

    def reset():
        native.library.cache_clear()
        native._LOADED.clear()
        tuning.forget()

    reset()
    yield monkeypatch
    monkeypatch.undo()
    reset()


@pytest.mark.parametrize("why", ["env", "no-avx2", "no-compiler"])
def test_fallback_without_native_kernels(no_native, why):
    if why == "env":
        no_native.setenv("GPTKIT_NO_NATIVE_KERNELS", "1")
    elif why == "no-avx2":
        no_native.setattr(cpu, "has", lambda *names: False)
    else:
        no_native.setattr(native, "_compiler", lambda: None)
    assert native.available() == []
    base = _tiny_model()
    expected = _greedy(base)
    for spec in ("int8", "int4"):
        model = GPTModel(base.cfg).eval()
        model.load_state_dict(base.state_dict())
        quantize_model(model, spec)
        layer = model.trf_blocks[0].att.W_query
        assert layer._path(torch.zeros(1, 1, base.cfg.emb_dim)) in ("aten", "torch")
        assert len(_greedy(model)[0]) == len(expected[0])
    from gptkit.errors import GptkitError

    with pytest.raises(GptkitError, match="backend native needs"):
        quantize_model(_tiny_model(), "int8:backend=native")


def test_kernel_choice_is_measured_once_and_cached_per_cpu_and_version(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("GPTKIT_CACHE_DIR", str(tmp_path))
    tuning.forget()
    calls = []
    real = tuning.measure_choice

    def counting(*args, **kwargs):
        calls.append(args[:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "measure_choice", counting)
    first = tuning.choose("int8", 64, 128, 0, threads=1)
    assert first in (*KERNELS, "aten", "torch") and len(calls) == 1
    saved = json.loads(tuning.cache_file().read_text())
    assert saved["choices"]["int8 64x128 t1"]["backend"] == first
    assert set(saved["cpu"]) == {"model", "flags", "torch_capability"}
    tuning.forget()  # a new process: read from the file, nothing timed
    assert tuning.choose("int8", 64, 128, 0, threads=1) == first
    assert len(calls) == 1
    # another CPU (or the same one with other flags) measures again
    monkeypatch.setattr(cpu, "fingerprint", lambda: "another-cpu")
    tuning.forget()
    tuning.choose("int8", 64, 128, 0, threads=1)
    assert len(calls) == 2
    # so does another gptkit version
    import gptkit._version

    monkeypatch.setattr(gptkit._version, "__version__", "999.0")
    tuning.forget()
    tuning.choose("int8", 64, 128, 0, threads=1)
    assert len(calls) == 3
    assert len(list((tmp_path / "kernels").glob("choices-*.json"))) == 3
    # under torch.compile nothing is timed: a recorded or preferred choice
    tuning.forget()
    monkeypatch.setattr(cpu, "fingerprint", lambda: "a-third-cpu")
    got = tuning.choose("int8", 64, 128, 0, threads=2, measure=False)
    assert len(calls) == 3 and got in (*native.available("int8"), "aten")
    tuning.forget()


def test_kernel_choice_is_the_fastest_on_weights_streamed_from_memory(monkeypatch):
    """Backends close to the fastest on cache-warm weights are timed again on
    copies past the last-level cache, and the cold time decides."""
    timed = []

    def fake(kind, n, k, group, backends, copies=1, **kwargs):
        timed.append((list(backends), copies))
        warm = {"a": 1.0, "b": 1.4, "c": 5.0}
        cold = {"a": 3.0, "b": 2.0}
        return {b: (warm if copies == 1 else cold)[b] for b in backends}

    monkeypatch.setattr(tuning, "time_backends", fake)
    entry = tuning.measure_choice("int8", 768, 768, 0, ["a", "b", "c"])
    assert entry["backend"] == "b"
    assert timed[1] == (["a", "b"], tuning.cold_copies("int8", 768, 768))
    assert timed[1][1] * 768 * 768 >= tuning.COLD_BYTES
    assert entry["us"]["c"] == 5e6 and entry["us_cold"] == {"a": 3e6, "b": 2e6}
    # one backend close to the fastest: nothing more is timed
    timed.clear()
    assert tuning.measure_choice("int8", 768, 768, 0, ["a", "c"])["backend"] == "a"
    assert len(timed) == 1


def test_a_cold_tie_goes_to_the_faster_warm_backend(monkeypatch):
    """Within COLD_TIE cold, the memory is the limit for both: the faster
    arithmetic (warm) wins, which also serves several rows best."""

    def fake(kind, n, k, group, backends, copies=1, **kwargs):
        warm = {"a": 1.0, "b": 1.5}
        cold = {"a": 2.0 * (1 + tuning.COLD_TIE / 2), "b": 2.0}
        return {b: (warm if copies == 1 else cold)[b] for b in backends}

    monkeypatch.setattr(tuning, "time_backends", fake)
    assert tuning.measure_choice("int8", 768, 768, 0, ["a", "b"])["backend"] == "a"


def test_backend_option_overrides_the_choice(monkeypatch):
    monkeypatch.setattr(
        tuning, "time_backends", lambda *a, **k: pytest.fail("timed a fixed backend")
    )
    lin = _linear(16, 64)
    for backend in ("torch", "reference", *RUNNABLE):
        layer = Int8Linear.from_linear(lin, backend)
        assert layer._path(torch.zeros(1, 64)) == backend


@pytest.mark.slow
def test_quality_with_quantized_activations_on_a_trained_model():
    """The integer kernels' arithmetic (activations in int8 blocks of 32, the
    ``reference`` backend, on whole held-out sequences): perplexity within 1%
    (int8) and 5% (int4) of float32; greedy agreement with float32 >= 90% for
    int8 (20 prompts x 20 tokens)."""
    import math

    from tests.trained_models import held_out_loss, split_ids, target_model

    trained = target_model()
    base = math.exp(held_out_loss(trained))
    held_out = split_ids()[1]
    prompts = [held_out[i * 20 : i * 20 + 8].tolist() for i in range(20)]
    greedy = get_registry().samplers.create("greedy")

    def continuations(model):
        out = generate_tokens(model, prompts, greedy, max_new_tokens=20, eos_id=None)
        return [t for r in out for t in r.new_ids]

    reference = continuations(trained)
    for spec, tol in (("int8", 0.01), ("int4", 0.05)):
        model = GPTModel(trained.cfg).eval()
        model.load_state_dict(trained.state_dict())
        quantize_model(model, f"{spec}:backend=reference")
        ppl = math.exp(held_out_loss(model))
        assert abs(ppl / base - 1) < tol, (spec, ppl, base)
        if spec == "int8":
            got = continuations(model)
            agree = sum(a == b for a, b in zip(reference, got, strict=True))
            assert agree / len(reference) >= 0.9, agree


# -- bf16 ------------------------------------------------------------------------

needs_bf16 = pytest.mark.skipif(
    native.library("avx512bf16") is None, reason="no AVX512-BF16 kernel here"
)


@needs_bf16
@pytest.mark.parametrize("rows", [1, 4, 16])
@pytest.mark.parametrize("channels", [70, 64, 16])  # tiles of 16 read in pairs
def test_bf16_kernel_matches_torch(rows, channels):
    from gptkit.plugins.quantizers.bf16 import Bf16Linear

    lin = _linear(channels, 96)
    x = torch.randn(rows, 96).to(torch.bfloat16)
    got = Bf16Linear.from_linear(lin, "avx512bf16")(x)
    expected = Bf16Linear.from_linear(lin, "torch")(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


@needs_bf16
def test_bf16_kernel_repacks_weights_loaded_in_place():
    from gptkit.plugins.quantizers.bf16 import Bf16Linear

    layer = Bf16Linear.from_linear(_linear(40, 64), "avx512bf16")
    x = torch.randn(1, 64).to(torch.bfloat16)
    layer(x)  # packs the first weights
    changed = _linear(40, 64)
    with torch.no_grad():
        changed.weight.mul_(-2.0)
    other = Bf16Linear.from_linear(changed, "torch")
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer(x).float(), other(x).float(), rtol=1e-2, atol=1e-2)


@needs_bf16
def test_dtype_bf16_decodes_with_the_kernel_and_the_same_tokens():
    from gptkit.formats.models import accelerate_bf16
    from gptkit.plugins.quantizers.bf16 import Bf16Linear

    base = _tiny_model().to(torch.bfloat16)
    state = base.state_dict()
    reference = _greedy(base)  # torch's bf16 F.linear
    model = GPTModel(base.cfg).to(torch.bfloat16).eval()
    model.load_state_dict(state)
    accelerate_bf16(model)
    assert isinstance(model.out_head, Bf16Linear)
    assert model.quantization["method"] == "bf16"
    assert _greedy(model) == reference


def test_bf16_elsewhere_is_left_alone_and_emulation_is_reported(monkeypatch, capsys):
    from gptkit.formats.models import accelerate_bf16
    from gptkit.plugins.quantizers import bf16

    fp32 = _tiny_model()
    assert accelerate_bf16(fp32) is fp32 and not hasattr(fp32, "quantization")
    monkeypatch.setattr(cpu, "has", lambda *names: False)  # an AVX2-only CPU
    monkeypatch.setattr(bf16, "_WARNED", False)
    monkeypatch.setattr(bf16, "kernel_available", lambda: False)
    model = _tiny_model().to(torch.bfloat16)
    accelerate_bf16(model)
    assert isinstance(model.out_head, nn.Linear)  # torch's bf16 path
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bf16 is emulated" in err and "x float32" in err
    accelerate_bf16(_tiny_model().to(torch.bfloat16))  # once per process
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not RUNNABLE, reason="no native kernels build on this machine")
@pytest.mark.parametrize("kernel", [k for k in RUNNABLE if k != "fma-avx2"])
def test_repacked_weights_follow_loaded_weights(kernel):
    """The kernels read weights repacked at first use; loading other weights
    into the layer (in place) repacks them, and the state dict keeps the
    stored format."""
    a, b = _linear(40, 64), nn.Linear(64, 40)
    x = torch.randn(1, 64)
    for make in (
        lambda lin: Int8Linear.from_linear(lin, kernel),
        lambda lin: Int4Linear.from_linear(lin, 32, kernel),
    ):
        layer, other = make(a), make(b)
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        layer(x)  # packs
        assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(layer(x), other(x), rtol=0, atol=0)


@pytest.mark.skipif(not RUNNABLE, reason="no native kernels build on this machine")
@pytest.mark.parametrize("kernel", RUNNABLE)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_half_precision_decoding_rows_take_the_kernel(kernel, dtype, kind):
    """A bf16/fp16 model's decoding rows run the integer kernel on the rows
    widened to float32 (not PyTorch's half-precision fallback); the result is
    the float32 kernel's, rounded to the input's dtype."""
    lin = _linear(96, 128)
    if kind == "int8":
        layer = Int8Linear.from_linear(lin, kernel)
    else:
        layer = Int4Linear.from_linear(lin, 32, kernel)
    x = torch.randn(2, 128)
    expected = layer(x.to(dtype).float()).to(dtype)  # the float32 kernel, rounded
    got = layer(x.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_layer_keeps_its_packed_kernel_when_another_is_barely_faster(monkeypatch):
    """Another thread count's choice: the layer keeps the tiles it holds when
    their cold time is within KEEP_MARGIN (a repack costs more than it saves)."""
    entry = {
        "backend": "a",
        "us": {"a": 1.0, "b": 1.5},
        "us_cold": {"a": 10.0, "b": 10.5},
    }
    monkeypatch.setattr(tuning, "candidates", lambda kind, native_only: ["a", "b", "c"])
    monkeypatch.setattr(tuning, "_choices", lambda: {"int8 64x128 t2": entry})
    assert tuning.choose("int8", 64, 128, 0, threads=2) == "a"
    assert tuning.choose("int8", 64, 128, 0, threads=2, keep="b") == "b"
    assert (
        tuning.choose("int8", 64, 128, 0, threads=2, keep="c") == "a"
    )  # not timed cold
    entry["us_cold"]["b"] = 10.0 * (1 + tuning.KEEP_MARGIN) + 0.5
    assert tuning.choose("int8", 64, 128, 0, threads=2, keep="b") == "a"


@pytest.mark.skipif(
    not {"avx2", "avx512vnni"} <= set(RUNNABLE), reason="needs both packed kernel sets"
)
def test_a_layer_keeps_a_pack_per_kernel_set_until_its_weights_change(monkeypatch):
    """Thread counts whose choices differ alternate kernel sets: each keeps its
    tiles (no repack at each switch); new weights drop them all."""
    layer = Int8Linear.from_linear(_linear(40, 64), "avx2")
    made = []
    real = type(layer)._tiles
    monkeypatch.setattr(
        type(layer),
        "_tiles",
        lambda self, kernel: made.append(kernel) or real(self, kernel),
    )
    x = torch.randn(1, 64)
    outputs = []
    for backend in ("avx2", "avx512vnni", "avx2", "avx512vnni"):
        layer.backend, layer._call = backend, None  # as a thread switch drops it
        outputs.append(layer(x))
    assert made == ["avx2", "avx512vnni"]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    layer.load_state_dict(layer.state_dict())
    layer(x)
    assert made == ["avx2", "avx512vnni", "avx512vnni"] and len(layer._packs) == 1
