"""Memory preflight: estimate what a command will allocate and refuse, in one
line, what cannot fit, before anything big is allocated (torch-free).

Every command that builds a model, a key/value cache, beams or logits asks
first: :func:`training_estimate`, :func:`evaluation_estimate` and
:func:`generation_estimate` add up the large buffers from the shapes alone;
:func:`check_memory` compares the sum with what the device has free (and the
``max_memory`` the user set) and raises :class:`MemoryPreflightError` naming
the settings that drive the largest part. The estimates count what dominates
— the tensors whose size grows with a setting — not every small buffer: they
are there to refuse a request that is far too large (100,000 beams, a
40,000-token context) in milliseconds, instead of the kernel's out-of-memory
killer taking the machine minutes later. A request near the limit may still
fail at run time; the command line reports that as one line too.

The activation figures follow Korthikanti et al. (2022), "Reducing Activation
Recomputation in Large Transformer Models", section 4.1 (about 34·d values
per token and layer kept for the backward pass at 16-bit, plus the attention
matrix when the attention is not fused); the optimizer state is AdamW's two
moments in fp32 (Loshchilov & Hutter, 2019).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gptkit.core.options import parse_size
from gptkit.errors import SettingError
from gptkit.system.memory import device_free_memory

if TYPE_CHECKING:
    from gptkit.core.config import GPTConfig

GiB = 1 << 30
#: Bytes of one element of each dtype name gptkit uses.
DTYPE_BYTES = {
    "fp32": 4,
    "float32": 4,
    "bf16": 2,
    "bfloat16": 2,
    "fp16": 2,
    "float16": 2,
}


class MemoryPreflightError(SettingError):
    """A request that would not fit in memory; the message names the settings
    to lower (``{num_beams}``: ``num_beams`` in Python, ``--num-beams`` on the
    command line); ``settings`` lists them."""

    def __init__(self, template: str, settings: tuple[str, ...] = ()) -> None:
        super().__init__(template)
        self.settings = settings


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``300 MiB``, ``12 KiB``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{max(n, 0) / 1024:,.0f} KiB"


@dataclass(frozen=True)
class MemoryPart:
    """One large allocation: its size, what it is, and the settings it grows with."""

    name: str
    nbytes: int
    detail: str = ""
    settings: tuple[str, ...] = ()


@dataclass
class MemoryEstimate:
    """The large allocations of one command (see the module docs)."""

    what: str
    parts: list[MemoryPart] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def add(self, name: str, nbytes: int, detail: str = "", *settings: str) -> None:
        self.parts.append(MemoryPart(name, int(nbytes), detail, settings))

    def times(self, n: int, what: str) -> MemoryEstimate:
        """The estimate of ``n`` copies (``what``: e.g. processes on a node)."""
        if n == 1:
            return self
        return MemoryEstimate(
            f"{self.what} ({n} {what})",
            [replace(p, nbytes=p.nbytes * n) for p in self.parts],
        )

    def largest(self) -> MemoryPart:
        return max(self.parts, key=lambda p: p.nbytes)

    def breakdown(self, limit: int = 3) -> str:
        parts = sorted(self.parts, key=lambda p: -p.nbytes)[:limit]
        return ", ".join(
            f"{p.name} {format_bytes(p.nbytes)}"
            + (f" for {p.detail}" if p.detail else "")
            for p in parts
        )


def _model_settings(cfg: GPTConfig) -> tuple[str, ...]:
    return ("emb_dim", "n_layers")


def model_estimate(cfg: GPTConfig, *, dtype: str = "fp32") -> MemoryEstimate:
    """The weights of a freshly initialised model."""
    est = MemoryEstimate("the model")
    n = cfg.num_parameters()
    est.add(
        "weights", DTYPE_BYTES[dtype] * n, f"{n:,} parameters", *_model_settings(cfg)
    )
    return est


def training_estimate(
    cfg: GPTConfig,
    *,
    batch_size: int,
    precision: str = "fp32",
    device_type: str = "cpu",
    weights_loaded: bool = False,
) -> MemoryEstimate:
    """Weights (unless ``weights_loaded``: already in memory), gradients and
    AdamW's moments (fp32), the activations kept for the backward pass of one
    micro-batch of ``batch_size`` x ``context_length`` tokens, and its
    logits."""
    est = MemoryEstimate("training")
    n = cfg.num_parameters()
    d, s, b, L = cfg.emb_dim, cfg.context_length, batch_size, cfg.n_layers
    model = _model_settings(cfg)
    if not weights_loaded:
        est.add("weights", 4 * n, f"{n:,} parameters", *model)
    est.add("gradients and AdamW state", 12 * n, "", *model)
    act_bytes = 4 if precision == "fp32" else 2
    tokens = b * s
    # Korthikanti et al.: ~34·d values per token and layer at 16 bits.
    est.add(
        "activations",
        L * tokens * 17 * d * act_bytes,
        f"{b} x {s} tokens x {L} layers",
        "batch_size",
        "context_length",
    )
    if cfg.drop_rate > 0 and device_type == "cpu":
        # Attention dropout has no fused kernel on the CPU: the (s x s) scores
        # of every head are kept for the backward pass.
        est.add(
            "attention matrices",
            (L + 1) * b * cfg.n_heads * s * s * 8,
            f"{b} x {cfg.n_heads} heads x {s}^2 positions",
            "context_length",
            "batch_size",
        )
    # Logits, their fp32 copy or log-softmax, and their gradient.
    est.add(
        "logits",
        tokens * cfg.vocab_size * (4 + 4 + act_bytes),
        f"{b} x {s} positions x {cfg.vocab_size:,} tokens",
        "batch_size",
        "context_length",
    )
    return est


def evaluation_estimate(
    cfg: GPTConfig, *, batch_size: int, dtype: str = "fp32", weights: bool = True
) -> MemoryEstimate:
    """The model (``weights``: not loaded yet) and one forward pass without
    gradients over ``batch_size`` x ``context_length`` tokens with its logits."""
    est = MemoryEstimate("evaluation")
    size = DTYPE_BYTES[dtype]
    n = cfg.num_parameters()
    if weights:
        est.add("weights", size * n, f"{n:,} parameters", *_model_settings(cfg))
    tokens = batch_size * cfg.context_length
    est.add(
        "activations",
        tokens * 8 * cfg.emb_dim * size,
        f"{batch_size} x {cfg.context_length} tokens",
        "batch_size",
        "context_length",
    )
    # The logits, their fp32 copy (none in fp32) and the log-softmax.
    est.add(
        "logits",
        tokens * cfg.vocab_size * (size + (4 if size != 4 else 0) + 4),
        f"{batch_size} x {cfg.context_length} positions",
        "batch_size",
        "context_length",
    )
    return est


def generation_estimate(
    cfg: GPTConfig,
    *,
    prompts: int,
    prompt_tokens: int,
    max_new_tokens: int,
    num_beams: int = 1,
    dtype: str = "fp32",
    weights: bool = True,
) -> MemoryEstimate:
    """The model (``weights``: not loaded yet), the key/value cache of every
    row (prompts x beams), the prefill's activations and logits, each step's
    logits and the sampler's work on them, and the growing token ids.
    ``prompt_tokens``: the longest prompt."""
    est = MemoryEstimate("generation")
    size = DTYPE_BYTES[dtype]
    n = cfg.num_parameters()
    if weights:
        est.add("weights", size * n, f"{n:,} parameters", *_model_settings(cfg))
    rows = prompts * num_beams
    row_settings = ("num_beams",) if num_beams > 1 else ()
    ctx = cfg.context_length
    prompt = min(max(prompt_tokens, 1), ctx)
    capacity = min(prompt + max_new_tokens, ctx)
    est.add(
        "key/value cache",
        2 * cfg.n_layers * rows * capacity * cfg.emb_dim * size,
        f"{rows:,} rows x {capacity:,} positions",
        *row_settings,
        "max_new_tokens",
    )
    # The prefill (or, past the context, each recomputed window) runs every
    # position: activations and attention scores; a prefill keeps only the
    # logits of each row's last position, a recomputed window makes them for
    # every position (and the previous step's are still alive meanwhile).
    sliding = prompt + max_new_tokens > ctx
    window = ctx if sliding else prompt
    logits = rows * window * cfg.vocab_size * size * 2 if sliding else 0
    est.add(
        "context window" if sliding else "prefill",
        rows * window * 8 * cfg.emb_dim * size
        + rows * cfg.n_heads * window * window * 4
        + logits,
        f"{rows:,} rows x {window:,} positions",
        *row_settings,
    )
    # Last-position logits in fp32, the sampler's sorted copy and indices.
    est.add(
        "step logits",
        rows * cfg.vocab_size * 20 * (2 if num_beams > 1 else 1),
        f"{rows:,} rows x {cfg.vocab_size:,} tokens",
        *row_settings,
    )
    # Token ids: the growing id and mask tensors and each row's Python list.
    est.add(
        "token ids",
        rows * (prompt + max_new_tokens) * 48,
        f"{rows:,} rows x {prompt + max_new_tokens:,} tokens",
        "max_new_tokens",
        *row_settings,
    )
    return est


def check_memory(
    estimate: MemoryEstimate,
    device: object = "cpu",
    *,
    max_memory: str | int | None = None,
) -> None:
    """Refuse ``estimate`` when it exceeds the device's free memory or
    ``max_memory``: a :class:`MemoryPreflightError` naming the largest part
    and the settings to lower."""
    need = estimate.total
    free, source = device_free_memory(device)
    limit_name = None
    budget = free
    if max_memory is not None:
        cap = parse_size(max_memory)
        if budget is None or cap < budget:
            budget, limit_name = cap, "max_memory"
    if budget is None or need <= budget:
        return
    largest = estimate.largest()
    settings = largest.settings
    names = tuple(f"{{{name}}}" for name in dict.fromkeys(settings))
    kind = getattr(device, "type", str(device).split(":")[0])
    if limit_name:
        where = f"{{max_memory}} is {format_bytes(budget)}"
        advice = f"; lower {_or(names)} or raise {{max_memory}}"
        settings = (*settings, "max_memory")
    else:
        where = f"{format_bytes(budget)} is {source} on {kind}"
        advice = f"; lower {_or(names)}" if names else "; use a smaller model"
    raise MemoryPreflightError(
        f"{estimate.what} needs about {format_bytes(need)} of memory"
        f" ({estimate.breakdown()}), but {where}{advice}",
        settings,
    )


def _or(names: tuple[str, ...]) -> str:
    if len(names) <= 2:
        return " or ".join(names)
    return ", ".join(names[:-1]) + f" or {names[-1]}"
