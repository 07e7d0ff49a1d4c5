"""The contenders of the sampling benchmarks, on identical weights.

- :func:`bench_model`: a preset-shaped ``GPTModel`` with seeded random weights
  and a tied head (GPT-2's layout), and :func:`transformers_twin`: a
  ``transformers.GPT2LMHeadModel`` holding the same weights.
- One traced generation per contender: :func:`trace_gptkit` (any installed
  sampler through gptkit's engine), :func:`trace_no_cache` (the book's
  ``generate_text_simple``: greedy, the whole window recomputed each step) and
  :func:`trace_transformers` (``transformers``' ``generate``). Each generates
  exactly ``max_new_tokens`` (no end-of-text stop, so every contender does the
  same work) for one prompt and returns a :class:`Trace` with a timestamp per
  token.
- Runners for :func:`gptkit.bench.measure.measure` and pytest-benchmark
  (:func:`gptkit_runner`, :func:`no_cache_runner`, :func:`transformers_runner`)
  and :class:`Contender`, which runs a whole prompt set per call.

When a token's timestamp is taken: for per-token samplers, when the token id
reaches the host (gptkit's ``on_token`` callback, ``transformers``' streamer;
both copy the id from the device, so no extra synchronisation is added); for
search strategies such as beam search, which emit nothing until the search ends,
at the end of each model forward pass (a search step; the device is
synchronised there). Time to first token therefore includes the prefill and the
first sampling step.

Torch and transformers are imported when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptkit.bench.measure import sync

PROMPT = [464, 1893, 286, 262, 1110, 318, 257, 649]  # 8 tokens
#: Options that make built-in samplers comparable to their transformers twins
#: (and the benchmark suite's settings); other samplers use their defaults.
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {
    "top-p": {"top_p": 0.9, "temperature": 0.8},
    "beam": {"num_beams": 4},
}


def bench_config(preset: str) -> Any:
    """The shape of :func:`bench_model`: the preset with a tied head,
    query/key/value biases and no dropout."""
    from gptkit.core.config import GPTConfig, get_preset

    cfg = get_preset(preset).replace(drop_rate=0.0)
    if type(cfg) is GPTConfig:
        cfg = cfg.replace(tie_embeddings=True, qkv_bias=True)
    return cfg


def bench_model(
    preset: str = "gpt2-124m",
    *,
    seed: int = 0,
    dtype: str = "fp32",
    device: Any = "cpu",
) -> Any:
    """A preset-shaped model of any family with seeded random weights and no
    dropout, in eval mode; a GPT-2 preset gets a tied head and query/key/value
    biases (GPT-2's layout, so a transformers twin exists)."""
    import torch

    from gptkit.core.device import resolve_dtype
    from gptkit.core.weights import new_model

    cfg = bench_config(preset)
    torch.manual_seed(seed)
    model = new_model(cfg).eval()
    return model.to(device=device, dtype=resolve_dtype(dtype))


def transformers_twin(model: Any) -> Any:
    """The ``transformers`` model of ``model``'s family (``GPT2LMHeadModel``,
    ``LlamaForCausalLM``, ``Qwen3ForCausalLM``) holding the same weights."""
    import transformers

    from gptkit.core.architectures import architecture_of

    cfg = model.cfg
    arch = architecture_of(cfg)
    hf_dict = arch.config_to_hf(cfg)
    hf_dict.pop("architectures", None)
    hf_dict.pop("torch_dtype", None)
    hf_cfg = transformers.AutoConfig.for_model(**hf_dict)
    with torch_default_dtype(next(model.parameters()).dtype):
        twin = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        state.pop("out_head.weight", None)
    twin.load_state_dict(arch.state_to_hf(cfg, state), strict=False)
    twin.tie_weights()
    param = next(model.parameters())
    return twin.to(device=param.device, dtype=param.dtype).eval()


def torch_default_dtype(dtype: Any) -> Any:
    """Build modules in ``dtype`` (a bf16 twin of a large model is never held
    in fp32)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def scope() -> Any:
        before = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(before)

    return scope()


# -- traces ---------------------------------------------------------------------


@dataclass
class Trace:
    """One generation for one prompt: its output and when each token came.

    ``ticks`` are ``time.perf_counter`` values, one per new token (or search
    step); ``tokens`` counts every returned sequence (beam search may return
    several); ``new_ids`` is the first (best) one.
    """

    prompt: list[int]
    new_ids: list[int]
    start: float
    end: float
    ticks: list[float] = field(default_factory=list)
    tokens: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def ttft(self) -> float | None:
        """Seconds from the start to the first token (None: not observed)."""
        return self.ticks[0] - self.start if self.ticks else None

    @property
    def latencies(self) -> list[float]:
        """Seconds between consecutive tokens (after the first)."""
        return [b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False)]


def _device_of(model: Any) -> Any:
    return next(model.parameters()).device


def trace_gptkit(
    model: Any,
    sampler: Any,
    prompt: Sequence[int],
    max_new_tokens: int,
    seed: int = 0,
    *,
    compiled: bool = False,
) -> Trace:
    """``max_new_tokens`` from ``sampler`` through gptkit's engine (no
    end-of-text stop), with a generator seeded by ``seed``; ``compiled`` runs
    the decode steps through torch.compile."""
    import torch

    from gptkit.core.generate import generate_tokens
    from gptkit.core.interfaces import SearchStrategy

    device = _device_of(model)
    ticks: list[float] = []
    on_token: Callable[[int, int], None] | None = None
    on_step: Callable[[], None] | None = None
    if isinstance(sampler, SearchStrategy):
        # A search yields no token until it ends: its steps are timed (not a
        # forward hook, which would keep the model off its fused decoding step).

        def on_step() -> None:
            sync(device)
            ticks.append(time.perf_counter())

    else:

        def on_token(row: int, token: int) -> None:
            ticks.append(time.perf_counter())

    generator = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    out = generate_tokens(
        model,
        [list(prompt)],
        sampler,
        max_new_tokens=max_new_tokens,
        eos_id=None,
        generator=generator,
        on_token=on_token,
        on_step=on_step,
        compiled=compiled,
    )
    sync(device)
    end = time.perf_counter()
    return Trace(
        list(prompt),
        list(out[0].new_ids),
        start,
        end,
        ticks,
        sum(len(r.new_ids) for r in out),
    )


def trace_no_cache(model: Any, prompt: Sequence[int], max_new_tokens: int) -> Trace:
    """The book's ``generate_text_simple``: greedy, the last ``context_length``
    tokens recomputed at every step (no KV cache)."""
    import torch

    ctx = model.cfg.context_length
    device = _device_of(model)
    ticks: list[float] = []
    start = time.perf_counter()
    ids = torch.tensor([list(prompt)], device=device)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(ids[:, -ctx:])[:, -1, :]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            sync(device)
            ticks.append(time.perf_counter())
    end = time.perf_counter()
    new_ids = ids[0, len(prompt) :].tolist()
    return Trace(list(prompt), new_ids, start, end, ticks, len(new_ids))


#: transformers' ``generate`` settings of the benchmark suite's modes.
TRANSFORMERS_MODES: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "top-p": {"do_sample": True, "top_p": 0.9, "temperature": 0.8, "top_k": 0},
    "beam": {"do_sample": False, "num_beams": 4, "early_stopping": False},
}


def transformers_kwargs(name: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """``generate`` keyword arguments that do what gptkit's built-in sampler
    ``name`` does with ``options``; None for samplers transformers lacks (or
    third-party ones, which gptkit cannot know)."""
    temperature = options.get("temperature", 1.0)
    if name == "greedy" or (name in ("top-k", "top-p", "min-p") and temperature == 0.0):
        return dict(TRANSFORMERS_MODES["greedy"])
    common = {"do_sample": True, "num_beams": 1, "temperature": temperature}
    top_k = options.get("top_k")
    if name == "top-k":
        return {**common, "top_k": top_k or 0, "top_p": 1.0}
    if name == "top-p":
        return {**common, "top_k": top_k or 0, "top_p": options["top_p"]}
    if name == "min-p":
        return {
            **common,
            "top_k": top_k or 0,
            "top_p": options.get("top_p") or 1.0,
            "min_p": options["min_p"],
        }
    if name == "beam":
        stopping = {"false": False, "true": True, "never": "never"}
        return {
            "do_sample": False,
            "num_beams": options["num_beams"],
            "length_penalty": options.get("length_penalty", 1.0),
            "early_stopping": stopping[str(options.get("early_stopping", "false"))],
            "num_return_sequences": options.get("num_return_sequences", 1),
        }
    return None


class _Streamer:
    """transformers streamer protocol: ``put`` gets the prompt, then each token."""

    def __init__(self, ticks: list[float]) -> None:
        self.ticks = ticks
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.ticks.append(time.perf_counter())

    def end(self) -> None:
        pass


def trace_transformers(
    twin: Any,
    kwargs: Mapping[str, Any],
    prompt: Sequence[int],
    max_new_tokens: int,
    seed: int = 0,
) -> Trace:
    """``twin.generate(**kwargs)`` for exactly ``max_new_tokens`` new tokens,
    after ``torch.manual_seed(seed)`` (transformers samples from the global
    generator)."""
    import torch

    device = _device_of(twin)
    ids = torch.tensor([list(prompt)], device=device)
    ticks: list[float] = []
    beams = int(kwargs.get("num_beams", 1))
    settings = {
        **kwargs,
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": max_new_tokens,
        "pad_token_id": 50256,
    }
    hook = None
    if beams > 1:  # transformers cannot stream beam search: time search steps

        def step_done(*_: Any) -> None:
            sync(device)
            ticks.append(time.perf_counter())

        hook = twin.register_forward_hook(step_done)
    else:
        settings["streamer"] = _Streamer(ticks)
    torch.manual_seed(seed)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = twin.generate(ids, attention_mask=torch.ones_like(ids), **settings)
        sync(device)
        end = time.perf_counter()
    finally:
        if hook is not None:
            hook.remove()
    new = out[:, ids.shape[1] :]
    return Trace(list(prompt), new[0].tolist(), start, end, ticks, int(new.numel()))


# -- runners: a callable returning the tokens it produced -------------------------


def gptkit_runner(
    model: Any, sampler: Any, prompt: list[int], max_new_tokens: int, seed: int = 0
) -> Callable[[], int]:
    """Generate ``max_new_tokens`` (no end-of-text stop); returns tokens made."""

    def run() -> int:
        return trace_gptkit(model, sampler, prompt, max_new_tokens, seed).tokens

    return run


def no_cache_runner(
    model: Any, prompt: list[int], max_new_tokens: int
) -> Callable[[], int]:
    """The book's ``generate_text_simple``: the whole window recomputed each step."""

    def run() -> int:
        return trace_no_cache(model, prompt, max_new_tokens).tokens

    return run


def transformers_runner(
    twin: Any, mode: str, prompt: list[int], max_new_tokens: int, seed: int = 0
) -> Callable[[], int]:
    """``transformers``' ``generate`` for ``mode`` (see TRANSFORMERS_MODES)."""
    kwargs = TRANSFORMERS_MODES[mode]

    def run() -> int:
        return trace_transformers(twin, kwargs, prompt, max_new_tokens, seed).tokens

    return run


class Contender:
    """One contender over a prompt set: each call generates for every prompt
    (one after another, batch size 1) and returns the tokens produced, so it
    can be passed to :func:`~gptkit.bench.measure.measure` (or pytest-benchmark).

    Call ``k`` (counting the warm-up) uses seed ``seed + k``, so repeats of a
    stochastic sampler give different samples (for self-BLEU) while every
    contender sees the same seeds. ``calls`` keeps each call's traces.
    """

    def __init__(
        self,
        name: str,
        trace_one: Callable[[list[int], int], Trace],
        prompts: Sequence[Sequence[int]],
        seed: int = 0,
    ) -> None:
        self.name = name
        self.trace_one = trace_one
        self.prompts = [list(p) for p in prompts]
        self.seed = seed
        self.calls: list[list[Trace]] = []

    def __call__(self) -> int:
        seed = self.seed + len(self.calls)
        traces = [self.trace_one(p, seed) for p in self.prompts]
        self.calls.append(traces)
        return sum(t.tokens for t in traces)
