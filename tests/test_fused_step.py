"""The fused decoding step (a quantized GPT-2 model's whole step in one C call,
gptkit.plugins.quantizers.fused): the same logits and tokens as the model's
Python forward, used only where it applies, rebuilt when what it points at
changes, and its operations (layer norm, GELU) agree with PyTorch's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from gptkit.core.config import get_preset
from gptkit.core.generate import generate_tokens
from gptkit.core.model import GPTModel, KVCache
from gptkit.core.quantize import quantize_model
from gptkit.core.registry import get_registry
from gptkit.core.weights import build_model
from gptkit.formats.models import accelerate_bf16
from gptkit.plugins.quantizers import bf16, native
from gptkit.plugins.quantizers.linear import KERNELS
from gptkit.system import decode_step

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(
        not decode_step.available() or not native.available("int8"),
        reason="no native kernels build on this machine",
    ),
]
#: the tiny layers on gptkit's kernels (auto may measure PyTorch faster there)
METHODS = ["int8:backend=native", "int4:group_size=32,backend=native"]


def _model(method: str, **cfg: object) -> GPTModel:
    torch.manual_seed(0)
    preset = get_preset("tiny").replace(tie_embeddings=True, **cfg)
    return quantize_model(GPTModel(preset).eval(), method)


def _steps(model: GPTModel, rows: int, fused: bool, n: int = 6) -> list[torch.Tensor]:
    """Logits of ``n`` teacher-forced decoding steps after a 5-token prefill
    (the first step runs the forward: it chooses the kernels)."""
    step = model.fused_step
    torch.manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (rows, 5 + n))
    dtype = model.tok_emb.weight.dtype
    cache = KVCache.allocate(model.cfg, rows, 5 + n, "cpu", dtype)
    out = []
    with torch.inference_mode():
        model(ids[:, :5], cache=cache)
        for i in range(5, 5 + n):
            model.fused_step = step if fused and i > 5 else None
            out.append(model(ids[:, i : i + 1], cache=cache))
    model.fused_step = step
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_logits_match_the_forward(method, rows, threads):
    torch.set_num_threads(threads)
    _compare_steps(_model(method), rows)


@pytest.mark.parametrize("kernel", [k for k in KERNELS if native.library(k)])
@pytest.mark.parametrize("method", ["int8", "int4:group_size=32"])
def test_every_kernel_set_runs_in_the_fused_step(kernel, method):
    # each kernel's calling convention (2, 3 or 5 arguments between the shape
    # and the output) through gk_step
    _compare_steps(
        _model(f"{method}{',' if ':' in method else ':'}backend={kernel}"), 2
    )


def _compare_steps(model: GPTModel, rows: int) -> None:
    ref, got = _steps(model, rows, False), _steps(model, rows, True)
    assert model.fused_step._program is not None  # the fused path ran
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape == (rows, 1, model.cfg.vocab_size)
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def _tokens(model: GPTModel, fused: bool, sampler: str = "greedy") -> list[list[int]]:
    """New tokens of two prompts of equal length (the fused step's rows),
    with the fused step or the forward."""
    step = model.fused_step
    model.fused_step = step if fused else None
    prompts = [[5, 6, 7, 8], [100, 3, 42, 9]]
    sample = get_registry().samplers.create(sampler)
    try:
        out = generate_tokens(model, prompts, sample, max_new_tokens=10, eos_id=None)
    finally:
        model.fused_step = step
    return [r.new_ids for r in out]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sampler", ["greedy", "beam"])
def test_greedy_and_beam_tokens_are_the_forwards(method, sampler):
    model = _model(method)
    assert _tokens(model, True, sampler) == _tokens(model, False, sampler)
    assert model.fused_step._program is not None


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("threads", [1, 2])
def test_beams_read_their_common_history_once_with_the_same_bits(
    method, threads, monkeypatch
):
    """Beam search tells the fused step which slots every beam holds as copies
    of one computation; reading them once for all beams (and copying only the
    rest when a beam takes another's history) changes no token and no score."""
    from gptkit.core.generate import Decoder
    from gptkit.plugins.samplers import beam

    torch.set_num_threads(threads)
    model = _model(method)
    prompt = [(7 * i) % model.cfg.vocab_size for i in range(40)]
    search = get_registry().samplers.create("beam", {"num_beams": 4})
    seen, rows_agree = [], []
    run = decode_step.Program.run

    def spy(self, tokens, rows, pos, out, threads, shared=0):
        seen.append(shared)
        return run(self, tokens, rows, pos, out, threads, shared)

    reorder = Decoder.reorder

    def checked(self, index, start=0):
        reorder(self, index, start)
        n = self.cache.shared
        keys = self.cache.keys[:, :, :n]
        rows_agree.append(bool((keys == keys[:, :1]).all()))

    monkeypatch.setattr(decode_step.Program, "run", spy)
    monkeypatch.setattr(Decoder, "reorder", checked)

    def search_once():
        return generate_tokens(model, [prompt], search, max_new_tokens=20, eos_id=None)

    once = search_once()
    assert max(seen) >= 40 and all(rows_agree)  # the prompt at least, read once
    monkeypatch.setattr(beam._History, "shared", lambda self: 0)
    monkeypatch.setattr(beam._History, "reorder", lambda self, order, n: 0)
    seen.clear()
    own = search_once()
    assert max(seen) == 0
    assert [(r.new_ids, r.score) for r in once] == [(r.new_ids, r.score) for r in own]


def test_it_steps_aside_where_it_does_not_apply():
    model = _model(METHODS[0])
    step = model.fused_step
    _steps(model, 1, True)
    cache = KVCache.allocate(model.cfg, 2, 8, "cpu", torch.float32)
    ids = torch.tensor([[1], [2]])
    with torch.inference_mode():
        cache.lengths = [3, 2]  # ragged rows: the forward's masks
        assert step(ids, cache) is None
        cache.lengths = [3, 3]
        assert step(ids, cache, logits_at=torch.tensor([0, 0])) is None
        assert step(torch.tensor([[1, 2], [3, 4]]), cache) is None  # a prefill
        static = KVCache(cache.keys, cache.values, [3, 3], static=True)
        assert step(ids, static) is None
    assert step(ids, cache) is None  # gradients on
    handle = model.trf_blocks[0].register_forward_hook(lambda *a: None)
    with torch.inference_mode():
        assert (
            step(ids, KVCache.allocate(model.cfg, 2, 8, "cpu", torch.float32)) is None
        )
    handle.remove()
    assert cache.lengths == [3, 3]  # nothing advanced


def test_only_kernel_backends_get_one():
    assert _model("int8").fused_step is not None
    assert _model("int4:backend=reference").fused_step is None
    assert _model("int8:backend=torch").fused_step is None


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen3-tiny"])
def test_llama_and_qwen3_fuse_with_rmsnorm_rope_and_swiglu(preset):
    # int8 on a kernel whose products see only the rounded activations: the
    # logits match to float rounding
    torch.manual_seed(0)
    model = quantize_model(build_model(get_preset(preset)).eval(), METHODS[0])
    _compare_steps(model, 2)
    assert _tokens(model, fused=True) == _tokens(model, fused=False)


def test_llama_int4_fuses_too():
    # int4's kernels also read the activations' float block sums (the zero
    # points' term), so a norm's last-place difference reaches the logits,
    # and RMSNorm on a tiny random model's small residual stream magnifies it
    torch.manual_seed(0)
    model = quantize_model(build_model(get_preset("llama-tiny")).eval(), METHODS[1])
    ref, got = _steps(model, 2, False), _steps(model, 2, True)
    assert model.fused_step._program is not None
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=0.05, atol=0.05)


def test_changed_weights_and_threads_rebuild_the_program():
    model = _model(METHODS[0])
    first = _steps(model, 1, True)
    program = model.fused_step._program
    torch.manual_seed(5)
    other = quantize_model(GPTModel(model.cfg).eval(), METHODS[0])
    model.load_state_dict(other.state_dict())  # in place: new integers
    ref, got = _steps(model, 1, False), _steps(model, 1, True)
    assert model.fused_step._program is not program
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    assert not torch.equal(first[-1], got[-1])
    program = model.fused_step._program
    torch.set_num_threads(2)
    _steps(model, 1, True)
    assert model.fused_step._program is not program


def test_a_generation_checks_in_full_only_when_it_starts_or_something_registers(
    monkeypatch,
):
    """The full check of what the program reads runs on a generation's first
    step (another cache, a position that does not follow), not on the steps
    after it — until a module, parameter or buffer is registered anywhere."""
    model = _model(METHODS[0])
    fused = model.fused_step
    checks = []  # full checks and builds (a build reads everything anew)
    for name in ("_unchanged", "_build"):
        real = getattr(type(fused), name)
        monkeypatch.setattr(
            type(fused),
            name,
            lambda self, *a, real=real, name=name: (
                checks.append(name) or real(self, *a)
            ),
        )
    _steps(model, 1, True)  # 5 fused steps: built on the first, trusted after
    assert len(checks) == 1
    _steps(model, 1, True)  # another cache: checked (or rebuilt) once
    assert len(checks) == 2
    cache = KVCache.allocate(model.cfg, 1, 12, "cpu", torch.float32)
    ids = torch.randint(0, model.cfg.vocab_size, (1, 12))
    with torch.inference_mode():
        model(ids[:, :5], cache=cache)
        model(ids[:, 5:6], cache=cache)
        assert len(checks) == 3
        program = fused._program
        block = model.trf_blocks[0]
        swapped = copy.deepcopy(block.norm1)
        swapped.scale.data.mul_(2.0)
        block.norm1 = swapped  # registered: the next step checks and rebuilds
        got = model(ids[:, 6:7], cache=cache)
        assert checks[3:] == ["_unchanged", "_build"]
        assert fused._program is not program
        model.fused_step = None
        cache.truncate([6])
        want = model(ids[:, 6:7], cache=cache)
        model.fused_step = fused
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        cache.truncate([5])  # a position that does not follow the last step's
        model(ids[:, 5:6], cache=cache)
        assert checks[5:] == ["_unchanged"]


def test_a_copy_steps_on_its_own_weights():
    model = _model(METHODS[1])
    _steps(model, 1, True)
    twin = copy.deepcopy(model)
    assert twin.fused_step.model is twin and twin.fused_step._program is None
    for r, g in zip(_steps(model, 1, True), _steps(twin, 1, True), strict=True):
        torch.testing.assert_close(g, r)


def test_bad_input_gets_the_forwards_errors():
    model = _model(METHODS[0])
    _steps(model, 1, True)
    cache = KVCache.allocate(model.cfg, 1, 8, "cpu", torch.float32)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]), cache=cache)
        model(torch.tensor([[4]]), cache=cache)
        model(torch.tensor([[5]]), cache=cache)  # fused
        assert model.fused_step._program is not None
        with pytest.raises(IndexError):
            model(torch.tensor([[model.cfg.vocab_size]]), cache=cache)
        assert cache.lengths == [5]
        for token in range(3):
            model(torch.tensor([[token]]), cache=cache)
        with pytest.raises(ValueError, match="KV cache holds 8"):
            model(torch.tensor([[1]]), cache=cache)


def test_norm_and_gelu_operations_match_torch():
    rows, d = 3, 40  # 40: a vector loop and a scalar tail
    torch.manual_seed(0)
    x = torch.randn(rows, d) * 3 + 1
    w, b = torch.randn(d), torch.randn(d)
    normed, act = torch.empty(rows, d), x.clone() * 2
    program = decode_step.Program()
    program.norm(x.data_ptr(), normed.data_ptr(), w.data_ptr(), b.data_ptr(), d, 1e-5)
    program.gelu(act.data_ptr(), d)
    assert program.run(0, rows, 0, 0, 1) == 0
    torch.testing.assert_close(normed, F.layer_norm(x, (d,), w, b, 1e-5))
    torch.testing.assert_close(act, F.gelu(x * 2, approximate="tanh"))
    with pytest.raises(ValueError, match="extras"):
        program.linear(0, 0, 1, 1, 0, (1,))


def test_a_model_that_does_not_qualify_is_not_rebuilt_every_step(monkeypatch):
    from gptkit.plugins.quantizers.fused import FusedStep

    model = _model(METHODS[0])
    builds = []
    build = FusedStep._build
    monkeypatch.setattr(
        FusedStep, "_build", lambda self, *a: builds.append(1) or build(self, *a)
    )
    handle = model.trf_blocks[1].register_forward_pre_hook(lambda *a: None)
    _steps(model, 1, True, n=40)
    assert model.fused_step._program is None and 4 <= len(builds) <= 8
    handle.remove()
    _steps(model, 1, True)  # a new cache: built again at once
    assert model.fused_step._program is not None


@pytest.mark.skipif(not bf16.kernel_available(), reason="needs AVX512-BF16")
@pytest.mark.parametrize(
    ("preset", "rows"), [("tiny", 1), ("tiny", 3), ("llama-tiny", 2), ("qwen3-tiny", 2)]
)
def test_bf16_models_fuse_with_bf16_rounding(preset, rows):
    # --dtype bf16 on an AVX512-BF16 CPU: the program keeps bf16 activations
    # and rounds where PyTorch's bf16 forward does (norms, RoPE's products,
    # SwiGLU's gate, residual adds)
    torch.manual_seed(0)
    model = build_model(get_preset(preset)).to(torch.bfloat16).eval()
    model = accelerate_bf16(model)
    ref, got = _steps(model, rows, False), _steps(model, rows, True)
    assert model.fused_step._program is not None
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == r.dtype == torch.bfloat16
        torch.testing.assert_close(g, r, rtol=0.02, atol=0.02)
    assert _tokens(model, fused=True) == _tokens(model, fused=False)
