"""``gptkit bench training``: the training step of ``gptkit train`` against the
book-style baseline, per precision, eager and compiled.

Each variant times ``Trainer.train_step``, the step ``gptkit train`` runs, with
the trainer's own optimizer (fused AdamW where torch has it), precision
(:mod:`gptkit.core.precision`) and ``torch.compile`` setting, on a fresh seeded
preset-shaped model and one fixed batch of random token ids, so only the step is
timed (no data loading): zero the gradients, forward and loss, backward, AdamW,
device synchronisation. The baseline (:mod:`gptkit.bench.book_baseline`: the
book's attention, LayerNorm, GELU and per-tensor AdamW, fp32) runs the same
batch in the same process with the same torch threads. A timed repeat is
``steps`` steps, after ``warmup`` untimed repeats (which also compile).

Per variant: tokens/s (batch x context x steps / the best repeat) and its
ratio to the baseline's (best and median repeats), MFU against the matmul peak
of the dtype its matrix products run in (:mod:`gptkit.bench.limits`), peak
memory, the last loss (a finite loss shows the step really trained), the
warm-up seconds (compile time shows there), and with ``profile`` one more step
under ``torch.profiler`` (:mod:`gptkit.bench.profile`): where its time goes.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gptkit.bench.measure import PeakMemory, measure, median
from gptkit.bench.settings import TrainingSettings
from gptkit.core.precision import PRECISIONS, get_precision
from gptkit.errors import GptkitError

KIND = "gptkit-bench-training"
SCHEMA = 2
BASELINE = "baseline"


@dataclass
class _Variant:
    """One contender: ``run`` does ``steps`` steps and returns the tokens."""

    name: str
    run: Callable[[], int]
    one_step: Callable[[], Any]
    state: dict[str, Any]


def _fixed_batch(cfg: Any, batch_size: int, seed: int, device: Any) -> tuple:
    """One batch of random token ids: inputs and targets (B, T) each."""
    import torch

    g = torch.Generator().manual_seed(seed)
    data = torch.randint(
        0, cfg.vocab_size, (batch_size, cfg.context_length + 1), generator=g
    )
    return data[:, :-1].to(device), data[:, 1:].to(device)


def batch_as_data(inputs: Any) -> Any:
    """The trainer's data: the benchmark batch as its training set (the trainer
    needs loaders to size an epoch; the timed steps read the batch directly)."""
    import torch

    from gptkit.core.data import DataSplits, EpochSampler

    rows = inputs.cpu()
    dataset = torch.utils.data.TensorDataset(rows, rows)
    sampler = EpochSampler(len(rows), shuffle=False)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=len(rows), sampler=sampler, generator=torch.Generator()
    )
    return DataSplits(
        train_loader=loader,
        train_eval_loader=loader,
        val_loader=loader,
        train_sampler=sampler,
        characters=0,
        total_tokens=rows.numel(),
        train_tokens=rows.numel(),
        val_tokens=rows.numel(),
    )


def _gptkit_variant(
    settings: TrainingSettings, cfg: Any, precision: str, compiled: bool, device: Any
) -> _Variant:
    import torch

    from gptkit.bench.measure import sync
    from gptkit.core.registry import get_registry
    from gptkit.core.settings import TrainSettings
    from gptkit.core.training.trainer import Trainer
    from gptkit.core.weights import new_model

    torch.manual_seed(settings.seed)
    model = new_model(cfg).to(device)
    inputs, targets = _fixed_batch(cfg, settings.batch_size, settings.seed, device)
    trainer = Trainer(
        model,
        batch_as_data(inputs),
        TrainSettings(
            lr=settings.lr,
            weight_decay=0.1,
            precision=precision,
            compile=compiled,
            max_new_tokens=0,
        ),
        device=device,
        scheduler=get_registry().schedulers.create("constant"),
    )
    batches = itertools.repeat((inputs, targets))
    state: dict[str, Any] = {"loss": None}

    def one_step() -> None:
        state["loss"] = trainer.train_step(batches)  # .item() waits for the device

    def run() -> int:
        for _ in range(settings.steps):
            one_step()
        sync(device)
        return settings.steps * inputs.numel()

    name = precision + (" compiled" if compiled else "")
    return _Variant(name, run, one_step, state)


def _baseline_variant(settings: TrainingSettings, cfg: Any, device: Any) -> _Variant:
    from gptkit.bench.book_baseline import book_setup, book_train_step
    from gptkit.bench.measure import sync

    model, optimizer, _, _ = book_setup(cfg, settings.batch_size, seed=settings.seed)
    model.to(device)
    inputs, targets = _fixed_batch(cfg, settings.batch_size, settings.seed, device)
    state: dict[str, Any] = {"loss": None}

    def one_step() -> None:
        state["loss"] = book_train_step(model, optimizer, inputs, targets)

    def run() -> int:
        for _ in range(settings.steps):
            one_step()
        sync(device)
        return settings.steps * inputs.numel()

    return _Variant(BASELINE, run, one_step, state)


def _check(settings: TrainingSettings, device: Any) -> None:
    from gptkit.core.precision import check_device
    from gptkit.errors import SettingError

    if not settings.precisions and not settings.baseline:
        raise GptkitError("nothing to benchmark: no precisions and no baseline")
    for name in settings.precisions:
        try:
            check_device(get_precision(name), device)
        except SettingError as exc:  # named as this command's option
            raise GptkitError(exc.render(lambda _: "precision")) from None


def _preflight(settings: TrainingSettings, cfg: Any, device: Any) -> None:
    """Refuse, before any model or batch is allocated, variants whose training
    step (weights, gradients, AdamW state, activations, logits) cannot fit;
    the variants run one after another, so the largest one counts."""
    from gptkit.errors import SettingError
    from gptkit.runs.preflight import check_memory, training_estimate

    precisions = [*settings.precisions, *(["fp32"] if settings.baseline else [])]
    estimates = [
        training_estimate(
            cfg,
            batch_size=settings.batch_size,
            precision=p,
            device_type=getattr(device, "type", str(device)),
        )
        for p in precisions
    ]
    if not estimates:
        return
    try:
        check_memory(max(estimates, key=lambda e: e.total), device)
    except SettingError as exc:  # named as this command's options
        raise GptkitError(
            exc.render(lambda name: "--" + name.replace("_", "-"))
        ) from None


def run_training(
    settings: TrainingSettings, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the baseline and every (precision, compiled) variant; returns the
    JSON-ready result."""
    import torch

    from gptkit.bench.limits import (
        machine_limits,
        matmul_parameters,
        training_flops_per_token,
    )
    from gptkit.bench.measure import machine_info
    from gptkit.core.config import get_preset
    from gptkit.core.device import resolve_device

    say = progress or (lambda _: None)
    unknown = [p for p in settings.precisions if p not in PRECISIONS]
    if unknown:  # before anything runs
        raise GptkitError(
            f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}"
        )
    cfg = get_preset(settings.preset).replace(context_length=settings.context_length)
    if settings.baseline and getattr(type(cfg), "arch", "gpt2") != "gpt2":
        raise GptkitError(
            f"the book-style baseline is GPT-2's; {settings.preset} is a"
            f" {type(cfg).arch} model: add --no-baseline"
        )
    device = resolve_device(settings.device)
    _check(settings, device)
    _preflight(settings, cfg, device)
    started = time.time()
    machine = machine_info(device)
    dtypes = tuple(
        dict.fromkeys(
            ["fp32", *(PRECISIONS[p].matmul_dtype for p in settings.precisions)]
        )
    )
    say(f"measuring the machine's limits on {device} ...")
    limits = machine_limits(device, dtypes, fresh=True)
    plan: list[tuple[str | None, bool]] = [(None, False)] if settings.baseline else []
    plan += [(p, False) for p in settings.precisions]
    if settings.compile:
        plan += [(p, True) for p in settings.precisions]
    from gptkit.core.weights import meta_model

    shape = meta_model(cfg)  # the model arithmetic, without memory
    flops_per_token = training_flops_per_token(shape, cfg.context_length)
    n_params = matmul_parameters(shape)
    tokens_per_step = settings.batch_size * cfg.context_length
    rows = []
    for precision, compiled in plan:
        if precision is None:
            variant = _baseline_variant(settings, cfg, device)
            peak_dtype = _fp32_peak_name(device)
        else:
            variant = _gptkit_variant(settings, cfg, precision, compiled, device)
            peak_dtype = PRECISIONS[precision].matmul_dtype
            if peak_dtype == "fp32":
                peak_dtype = _fp32_peak_name(device)
        say(
            f"{variant.name}: {settings.warmup} warm-up + {settings.repeats} timed"
            f" repeats of {settings.steps} steps"
            + _estimate(flops_per_token * tokens_per_step, limits, peak_dtype)
        )
        with PeakMemory(device) as memory:
            t0 = time.perf_counter()
            for _ in range(settings.warmup):
                variant.run()
            warm = time.perf_counter() - t0
            m = measure(variant.name, variant.run, settings.repeats, warmup=0)
        row: dict[str, Any] = {
            "name": variant.name,
            "kind": "baseline" if precision is None else "training",
            "precision": precision or "fp32",
            "compiled": compiled,
            "seconds": list(m.seconds),
            "tokens": m.tokens,
            "tokens_per_s": m.tokens_per_s,
            "tokens_per_s_median": m.tokens / median(m.seconds),
            "achieved_tflops": flops_per_token * m.tokens_per_s / 1e12,
            "peak_dtype": peak_dtype,
            "mfu": None,  # below, against the best measured peak
            "peak_memory_mib": memory.peak_mib,
            "warmup_seconds": warm,
            "final_loss": variant.state["loss"],
            "profile": None,
        }
        if settings.profile:
            from gptkit.bench.profile import profile_step

            say(f"{variant.name}: one more step under torch.profiler")
            row["profile"] = profile_step(
                variant.one_step, device, 6 * n_params * tokens_per_step
            )
        rows.append(row)
        del variant
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    say("measuring the machine's limits again (the best measurement is kept) ...")
    limits = machine_limits(device, dtypes, fresh=True)
    _ratios_and_mfu(rows, limits)
    machine["load_average_1min_end"] = machine_info(device)["load_average_1min"]
    return {
        "kind": KIND,
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine,
        "settings": {
            "model": f"preset {settings.preset} (random weights, seed {settings.seed})",
            "config": cfg.to_dict(),
            "matmul_parameters": n_params,
            "flops_per_token": flops_per_token,
            "device": str(device),
            "precisions": list(settings.precisions),
            "compile": settings.compile,
            "baseline": settings.baseline,
            "profile": settings.profile,
            "batch_size": settings.batch_size,
            "context_length": cfg.context_length,
            "steps": settings.steps,
            "repeats": settings.repeats,
            "warmup": settings.warmup,
            "seed": settings.seed,
            "optimizer": f"AdamW(lr={settings.lr}, weight_decay=0.1)",
            "step": "Trainer.train_step (gptkit train's step)",
        },
        "limits": limits.to_dict(),
        "rows": rows,
    }


def _fp32_peak_name(device: Any) -> str:
    """fp32 matrix products run as TF32 on a GPU that allows it."""
    import torch

    if device.type == "cuda" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "fp32"


def _estimate(flops_per_step: float, limits: Any, dtype: str) -> str:
    """A note when the machine's peak for ``dtype`` makes a step slow (a CPU
    without bfloat16 units), so nobody waits without knowing why."""
    peak = limits.peak_tflops(dtype)
    fp32 = limits.peak_tflops("fp32")
    if not peak or not fp32 or peak >= fp32 / 4:
        return ""
    seconds = flops_per_step / (peak * 1e12)
    return (
        f" (at least {seconds:.0f} s per step: the measured {dtype} matmul peak here"
        f" is {peak * 1e3:.2f} GFLOP/s, fp32's {fp32 * 1e3:.0f})"
    )


def _ratios_and_mfu(rows: list[dict[str, Any]], limits: Any) -> None:
    base = next((r for r in rows if r["kind"] == "baseline"), None)
    for row in rows:
        peak = limits.peak_tflops(row["peak_dtype"])
        row["mfu"] = row["achieved_tflops"] / peak if peak else None
        if base is not None:
            row["vs_baseline"] = row["tokens_per_s"] / base["tokens_per_s"]
            row["vs_baseline_median"] = (
                row["tokens_per_s_median"] / base["tokens_per_s_median"]
            )
        else:
            row["vs_baseline"] = row["vs_baseline_median"] = None
