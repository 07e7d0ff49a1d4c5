"""``gptkit bench sampling``: speed and quality of every sampler, side by side.

A pass of a contender generates exactly ``max_new_tokens`` for each prompt, one
prompt at a time (batch size 1, no end-of-text stop). Each contender makes
``warmup`` untimed passes, then ``repeats`` timed passes in interleaved rounds
(every contender once per round, so drift of a shared machine touches all
alike); see :mod:`gptkit.bench.measure` for the timing rules and
:mod:`gptkit.bench.runners` for when a token's time is taken. Per contender:

- ``tokens_per_s``: new tokens of one pass over the prompts / the best pass's
  seconds (prefill included);
- ``ttft_ms``: median time to first token over prompts and timed repeats;
- ``latency_ms``: p50 / p90 of the time between consecutive tokens, pooled;
- ``decode_tokens_per_s``: intervals / their total time (prefill excluded), and
  ``bandwidth_fraction``: that rate over the bandwidth bound
  (:mod:`gptkit.bench.limits`);
- ``peak_memory_mib``: the largest peak memory of one of its passes above what
  was in use before that pass (warm-up included), see
  :class:`gptkit.bench.measure.PeakMemory`;
- quality (:mod:`gptkit.bench.metrics`): ``nll``, the mean negative
  log-likelihood (nats per token) of the generated tokens under the model
  itself (temperature 1, no truncation), scored in one forward pass over
  prompt + generation (cut to the last ``context_length`` + 1 tokens when
  longer); distinct-1/2/3, repeated 4-grams and self-BLEU across the repeats'
  samples of each prompt (a contender's ``k``-th pass, counting warm-up,
  uses seed ``seed + k``, the same for every contender).

Baselines (``no-cache``: the book's loop, greedy; ``transformers``: its
``generate`` with the same settings, for the built-in samplers it has) are rows
of their own, and each sampler's tokens/s ratio to them is a column.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from gptkit.bench.measure import measure_interleaved, median, percentile
from gptkit.bench.metrics import quality_summary
from gptkit.bench.runners import (
    SAMPLER_OPTIONS,
    Contender,
    Trace,
    bench_model,
    trace_gptkit,
    trace_no_cache,
    trace_transformers,
    transformers_kwargs,
    transformers_twin,
)
from gptkit.bench.settings import (
    BASELINES,
    SamplingSettings,
)
from gptkit.errors import GptkitError

SCHEMA = 1
KIND = "gptkit-bench-sampling"

Progress = Callable[[str], None]


def create_samplers(settings: SamplingSettings) -> dict[str, Any]:
    """name -> sampler instance, validating names and options (before any model
    is loaded, so bad input fails fast)."""
    from gptkit.core.registry import get_registry

    registry = get_registry().samplers
    if not settings.samplers:
        raise GptkitError("no samplers to benchmark")
    for name in settings.samplers:
        registry.entry(name)  # unknown name: lists the installed ones
    unknown = sorted(set(settings.options) - set(settings.samplers))
    if unknown:
        raise GptkitError(
            f"options given for sampler {unknown[0]!r}, which is not benchmarked"
            f" (--samplers {','.join(settings.samplers)})"
        )
    samplers = {}
    for name in settings.samplers:
        options = {**SAMPLER_OPTIONS.get(name, {}), **settings.options.get(name, {})}
        samplers[name] = registry.create(name, options)
    return samplers


def _load_model(settings: SamplingSettings, device: Any) -> tuple[Any, str]:
    from gptkit.core.device import resolve_dtype

    if settings.weights is None:
        model = bench_model(
            settings.preset, seed=settings.seed, dtype=settings.dtype, device=device
        )
        return model, f"preset {settings.preset} (random weights, seed {settings.seed})"
    from gptkit.formats.models import model_from_spec

    model, _ = model_from_spec(
        settings.weights, device=device, dtype=resolve_dtype(settings.dtype)
    )
    return model.eval(), settings.weights


def _preflight(
    settings: SamplingSettings,
    samplers: dict[str, Any],
    cfg: Any,
    device: Any,
    weights: bool,
) -> None:
    """Refuse, before the contenders allocate anything, a run whose widest
    generation (one prompt at a time, the most beams, the longest prompt) or
    model cannot fit in the device's free memory."""
    from gptkit.errors import SettingError
    from gptkit.runs.preflight import check_memory, generation_estimate

    beams = max(
        (int(getattr(s.options, "num_beams", 1) or 1) for s in samplers.values()),
        default=1,
    )
    longest = max((len(p.encode("utf-8")) + 1 for p in settings.prompts), default=1)
    estimate = generation_estimate(
        cfg,
        prompts=1,
        prompt_tokens=longest,
        max_new_tokens=settings.max_new_tokens,
        num_beams=beams,
        dtype=settings.dtype,
        weights=weights,
    )
    try:
        check_memory(estimate, device)
    except SettingError as exc:  # named as this command's options
        flags = {"num_beams": "-o beam.num_beams", "max_new_tokens": "--max-new-tokens"}
        raise GptkitError(
            exc.render(lambda name: flags.get(name, "--" + name.replace("_", "-")))
        ) from None


def _jsonable(value: Any) -> Any:
    """Options as JSON values (a plugin's option of another type: its str)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def generated_nll(
    model: Any, prompt: Sequence[int], new_ids: Sequence[int]
) -> tuple[float, int]:
    """(sum of -log p, count) of ``new_ids`` after ``prompt`` under ``model``:
    one forward pass over the last ``context_length`` + 1 tokens."""
    import torch

    if not new_ids:
        return 0.0, 0
    ctx = model.cfg.context_length
    seq = [*prompt, *new_ids][-(ctx + 1) :]
    scored = min(len(new_ids), len(seq) - 1)
    device = next(model.parameters()).device
    ids = torch.tensor([seq], device=device)
    with torch.inference_mode():
        logits = model(ids[:, :-1])[0, -scored:].float()  # (scored, V)
        logp = torch.log_softmax(logits, dim=-1)
        targets = ids[0, -scored:]
        nll = -logp.gather(-1, targets[:, None]).sum()
    return float(nll), scored


def _row(
    name: str,
    kind: str,
    contender: Contender,
    seconds: list[float],
    tokens: int,
    warmup: int,
    peak_mib: float | None,
    model: Any,
    bound_tps: float,
) -> dict[str, Any]:
    """A result row: speed from the timed repeats, quality of their samples."""
    timed: list[list[Trace]] = contender.calls[warmup:]
    traces = [t for call in timed for t in call]
    ttfts = [t.ttft for t in traces if t.ttft is not None]
    gaps = [g for t in traces for g in t.latencies]
    nll_sum, nll_count = 0.0, 0
    for t in traces:
        s, c = generated_nll(model, t.prompt, t.new_ids)
        nll_sum, nll_count = nll_sum + s, nll_count + c
    best = min(seconds)
    tokens_per_s = tokens / best
    decode = len(gaps) / sum(gaps) if gaps and sum(gaps) > 0 else tokens_per_s
    return {
        "name": name,
        "kind": kind,
        "seconds": list(seconds),
        "tokens": tokens,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_median": tokens / median(seconds),
        "ttft_ms": median(ttfts) * 1e3 if ttfts else None,
        "latency_ms": {
            "p50": percentile(gaps, 50) * 1e3 if gaps else None,
            "p90": percentile(gaps, 90) * 1e3 if gaps else None,
        },
        "decode_tokens_per_s": decode,
        "bandwidth_fraction": decode / bound_tps,
        "peak_memory_mib": peak_mib,
        "quality": {
            "nll": nll_sum / nll_count if nll_count else None,
            **quality_summary([[t.new_ids for t in call] for call in timed]),
        },
        "vs": {},
        "vs_median": {},
        "outputs": [[t.new_ids for t in call] for call in timed],
    }


def ts_of(row: dict[str, Any]) -> str:
    """The thread-count suffix of a row's name (empty with one count)."""
    return str(row.get("thread_suffix", ""))


def _median_ratio(row: dict[str, Any], other: dict[str, Any]) -> float:
    return row["tokens_per_s_median"] / other["tokens_per_s_median"]


def _torch_default_threads() -> int:
    """The thread count torch starts with (one per usable core)."""
    from gptkit.bench.measure import usable_cores

    return usable_cores()


def _threads(count: int) -> Any:
    from gptkit.bench.measure import torch_threads

    return torch_threads(count)


def _with_threads(
    count: int, trace: Callable[[list[int], int], Trace]
) -> Callable[[list[int], int], Trace]:
    """``trace`` run with ``count`` torch threads."""

    def run(prompt: list[int], seed: int) -> Trace:
        with _threads(count):
            return trace(prompt, seed)

    return run


def _variants(
    model: Any, settings: SamplingSettings, say: Progress
) -> list[tuple[str, Any, bool]]:
    """(row-name suffix, model, compiled) for the base model, each quantization
    (a quantized copy) and, with ``compile``, each of those compiled."""
    import copy

    from gptkit.core.quantize import quantize_model

    variants: list[tuple[str, Any, bool]] = [("", model, False)]
    for spec in settings.quantize:
        say(f"quantizing a copy of the model: {spec} ...")
        variants.append((f" {spec}", quantize_model(copy.deepcopy(model), spec), False))
    if settings.compile:
        variants += [(f"{s} compiled", m, True) for s, m, _ in list(variants)]
    return variants


def run_sampling(
    settings: SamplingSettings, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready result (see the module docs)."""

    from gptkit.bench.limits import (
        bandwidth_bound,
        machine_limits,
        weight_bytes_per_token,
    )
    from gptkit.bench.measure import machine_info
    from gptkit.bench.runners import bench_config
    from gptkit.core.device import resolve_device, resolve_dtype
    from gptkit.core.generate import prepare_prompt
    from gptkit.core.interfaces import SearchStrategy
    from gptkit.core.tokenizer import encode

    say = progress or (lambda _: None)
    if settings.repeats < 1:
        raise GptkitError("--repeats must be at least 1")
    if not settings.prompts:
        raise GptkitError("no prompts to benchmark")
    unknown = sorted(set(settings.baselines) - set(BASELINES))
    if unknown:
        raise GptkitError(
            f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}"
        )
    samplers = create_samplers(settings)
    if "transformers" in settings.baselines:
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise GptkitError(
                "--baseline transformers needs the transformers package"
                " (pip install transformers)"
            ) from None
    device = resolve_device(settings.device)
    resolve_dtype(settings.dtype)
    started = time.time()
    machine = machine_info(device)
    if settings.weights is None:  # refused before the model is built
        _preflight(settings, samplers, bench_config(settings.preset), device, True)
    model, model_desc = _load_model(settings, device)
    if settings.weights is not None:
        _preflight(settings, samplers, model.cfg, device, False)
    ctx = model.cfg.context_length
    prompts = [prepare_prompt(encode(p), ctx, truncate=True) for p in settings.prompts]
    dtype_name = settings.dtype
    say(f"measuring the machine's limits on {device} ...")
    limit_dtypes = ("fp32", dtype_name) if dtype_name != "fp32" else ("fp32",)
    machine_limits(device, limit_dtypes, fresh=True)
    bytes_per_token = weight_bytes_per_token(model)
    # counted before the bf16 kernel swap below replaces the linear layers
    n_parameters = sum(p.numel() for p in model.parameters())

    new = settings.max_new_tokens
    import torch

    default_threads = torch.get_num_threads()
    counts = [c or _torch_default_threads() for c in settings.thread_counts]
    counts = list(dict.fromkeys(counts)) or [default_threads]
    many = len(counts) > 1
    # Every contender: (name, kind, traced generation of one prompt, row extras).
    plan: list[tuple[str, str, Callable[[list[int], int], Trace], dict[str, Any]]]
    plan = []
    variants = _variants(model, settings, say)
    twin = transformers_twin(model) if "transformers" in settings.baselines else None
    # --dtype bf16 on an AVX512-BF16 CPU: the base rows use gptkit's bf16
    # kernel, as `gptkit generate --dtype bf16` does (in place, after the
    # quantized copies and the transformers twin were made from the weights)
    from gptkit.formats.models import accelerate_bf16

    accelerate_bf16(model)
    for threads in counts:
        ts = f" @{threads}t" if many else ""
        common = {"threads": threads, "thread_suffix": ts}
        for variant, vmodel, compiled in variants:
            vsamplers = samplers if variant == "" else create_samplers(settings)
            for name, sampler in vsamplers.items():
                strategy = (
                    "search" if isinstance(sampler, SearchStrategy) else "per-token"
                )
                plan.append(
                    (
                        f"{name}{variant}{ts}",
                        "sampler",
                        _with_threads(
                            threads,
                            lambda p, s, smp=sampler, m=vmodel, c=compiled: (
                                trace_gptkit(m, smp, p, new, s, compiled=c)
                            ),
                        ),
                        {
                            "sampler": name,
                            "options": _jsonable(dataclasses.asdict(sampler.options)),
                            "strategy": strategy,
                            "variant": variant.strip() or "base",
                            "quantize": getattr(vmodel, "quantization", None),
                            "compiled": compiled,
                            "weight_bytes_per_token": weight_bytes_per_token(vmodel),
                            "_sampler": sampler,
                            **common,
                        },
                    )
                )
        if "no-cache" in settings.baselines:
            plan.append(
                (
                    f"no-cache greedy (book){ts}",
                    "baseline",
                    _with_threads(threads, lambda p, s: trace_no_cache(model, p, new)),
                    {"baseline": "no-cache", **common},
                )
            )
        if twin is not None:
            for name, sampler in samplers.items():
                kwargs = transformers_kwargs(name, dataclasses.asdict(sampler.options))
                if kwargs is not None:
                    plan.append(
                        (
                            f"transformers {name}{ts}",
                            "baseline",
                            _with_threads(
                                threads,
                                lambda p, s, kw=kwargs: trace_transformers(
                                    twin, kw, p, new, s
                                ),
                            ),
                            {
                                "baseline": "transformers",
                                "sampler": name,
                                "generate_kwargs": kwargs,
                                **common,
                            },
                        )
                    )
    contenders = [
        Contender(name, trace, prompts, settings.seed) for name, _, trace, _ in plan
    ]
    # One untimed generation first, so one-time costs (lazy initialisation,
    # the allocator's first growth) are not charged to the first contender.
    trace_gptkit(model, next(iter(samplers.values())), prompts[0], new, settings.seed)
    say(
        f"{len(contenders)} contenders x {len(prompts)} prompts x {new} tokens:"
        f" {settings.warmup} warm-up pass each, then {settings.repeats} rounds"
    )
    measured = measure_interleaved(
        [(c.name, c) for c in contenders],
        settings.repeats,
        settings.warmup,
        device,
        say,
    )
    say("measuring the machine's limits again (the best measurement is kept) ...")
    limits_at = {}
    for threads in counts:
        with _threads(threads):
            if many:  # the start's measurement was at the default count only
                machine_limits(device, limit_dtypes, fresh=True)
            limits_at[threads] = machine_limits(device, limit_dtypes, fresh=True)
    limits = limits_at[counts[0]]
    bound_tps = bandwidth_bound(bytes_per_token, limits.bandwidth_gbs)
    rows: list[dict[str, Any]] = []
    baseline_rows: dict[str, dict[str, Any]] = {}
    for (name, kind, _, extra), contender, result in zip(
        plan, contenders, measured, strict=True
    ):
        m = result.measurement
        extra = dict(extra)
        sampler_obj = extra.pop("_sampler", None)
        row_bytes = extra.get("weight_bytes_per_token", bytes_per_token)
        row_limits = limits_at[extra["threads"]]
        row = _row(
            name,
            kind,
            contender,
            m.seconds,
            m.tokens,
            settings.warmup,
            result.peak_mib,
            model,
            bandwidth_bound(row_bytes, row_limits.bandwidth_gbs),
        )
        row["decode_bound_tokens_per_s"] = bandwidth_bound(
            row_bytes, row_limits.bandwidth_gbs
        )
        row["bandwidth_gbs"] = row_limits.bandwidth_gbs
        stats = getattr(sampler_obj, "stats", None)
        if callable(stats):
            row["sampler_stats"] = stats()
        row.update(extra)
        rows.append(row)
        if kind == "baseline":
            baseline_rows[
                name if extra["baseline"] == "transformers" else "no-cache" + ts_of(row)
            ] = row
    by_name = {row["name"]: row for row in rows}

    def ratio(row: dict[str, Any], other: dict[str, Any]) -> float:
        return row["tokens_per_s"] / other["tokens_per_s"]

    for row in rows:
        if row["kind"] != "sampler":
            continue
        ts = ts_of(row)
        base = by_name.get(row["sampler"] + ts)
        if base is not None and base is not row:
            row["vs"]["base"] = ratio(row, base)
            row["vs_median"]["base"] = _median_ratio(row, base)
        suffix = row["name"][len(row["sampler"]) :]
        greedy = by_name.get(f"greedy{suffix}")
        if "sampler_stats" in row and greedy is not None:
            row["vs"]["greedy"] = ratio(row, greedy)
        if "no-cache" + ts in baseline_rows:
            row["vs"]["no-cache"] = ratio(row, baseline_rows["no-cache" + ts])
        # a quantized or compiled row against transformers' float32 row
        twin_row = baseline_rows.get(f"transformers {row['sampler']}{ts}")
        if twin_row is not None:
            row["vs"]["transformers"] = ratio(row, twin_row)
            row["vs_median"]["transformers"] = _median_ratio(row, twin_row)
    machine["load_average_1min_end"] = machine_info(device)["load_average_1min"]
    return {
        "kind": KIND,
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine,
        "settings": {
            "model": model_desc,
            "config": model.cfg.to_dict(),
            "parameters": n_parameters,
            "weight_bytes_per_token": bytes_per_token,
            "device": str(device),
            "dtype": dtype_name,
            "samplers": list(samplers),
            "prompts": list(settings.prompts),
            "prompts_source": settings.prompts_source,
            "prompt_tokens": [len(p) for p in prompts],
            "max_new_tokens": new,
            "repeats": settings.repeats,
            "warmup": settings.warmup,
            "seed": settings.seed,
            "baselines": list(settings.baselines),
            "quantize": list(settings.quantize),
            "compile": settings.compile,
            "thread_counts": counts,
            "batch_size": 1,
        },
        "limits": {
            **limits.to_dict(),
            "decode_bound_tokens_per_s": bound_tps,
        },
        "rows": rows,
    }
