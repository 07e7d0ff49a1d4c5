"""``gptkit bench training``: training throughput and MFU across precisions
and ``torch.compile``.

Each variant trains a fresh, seeded preset-shaped model with AdamW (the book's
settings: lr 4e-4, weight decay 0.1) on one fixed batch of random token ids, so
only the model's step is timed (no data loading): zero the gradients, forward
under ``torch.autocast`` for the mixed precisions (fp32 weights and optimizer;
a gradient scaler for fp16, Micikevicius et al., 2018), the core's
``batch_loss``, backward, optimizer step, device synchronisation. A timed repeat
is ``steps`` such steps, after ``warmup`` untimed repeats (which also compile).

Per variant: tokens/s (batch x context x steps / the best repeat), MFU against
the matmul peak of the autocast dtype (:mod:`gptkit.bench.limits`), peak
memory, the last loss (a finite loss shows the step really trained) and the
warm-up seconds (compile time shows there).

This builds on the core's model and loss directly; ``gptkit train
--precision/--compile`` use the same autocast and compile recipe.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gptkit.bench.measure import PeakMemory, measure, median
from gptkit.core.errors import GptkitError

#: --precisions values -> autocast dtype name (None: plain fp32)
PRECISIONS: dict[str, str | None] = {
    "fp32": None,
    "bf16-mixed": "bf16",
    "fp16-mixed": "fp16",
}
KIND = "gptkit-bench-training"
SCHEMA = 1


@dataclass
class TrainingSettings:
    """What to run; ``compile``: also measure every precision compiled."""

    preset: str = "mini"
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16-mixed"])
    compile: bool = False
    batch_size: int = 4
    context_length: int | None = None
    steps: int = 4
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    lr: float = 4e-4
    device: str = "auto"


def _variant(
    settings: TrainingSettings, precision: str, compiled: bool, device: Any
) -> tuple[Callable[[], int], Any, dict[str, Any]]:
    """(run, model, state): ``run`` does ``steps`` training steps."""
    import torch

    from gptkit.core.config import get_preset
    from gptkit.core.device import resolve_dtype
    from gptkit.core.loss import batch_loss
    from gptkit.core.model import GPTModel

    cfg = get_preset(settings.preset).replace(context_length=settings.context_length)
    torch.manual_seed(settings.seed)
    model = GPTModel(cfg).to(device).train()
    step_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.1)
    autocast_name = PRECISIONS[precision]
    kind = device.type
    scaler = torch.amp.GradScaler(kind, enabled=precision == "fp16-mixed")
    g = torch.Generator().manual_seed(settings.seed)
    shape = (settings.batch_size, cfg.context_length + 1)
    data = torch.randint(0, cfg.vocab_size, shape, generator=g).to(device)
    inputs, targets = data[:, :-1], data[:, 1:]  # (B, T) each
    state: dict[str, Any] = {"loss": None}

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if autocast_name is None:
            return contextlib.nullcontext()
        return torch.autocast(kind, dtype=resolve_dtype(autocast_name))

    def run() -> int:
        for _ in range(settings.steps):
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = batch_loss(inputs, targets, step_model, device)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        state["loss"] = float(loss.detach())  # also waits for the device
        from gptkit.bench.measure import sync

        sync(device)
        return settings.steps * inputs.numel()

    return run, model, state


def run_training(
    settings: TrainingSettings, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every (precision, compiled) variant; returns the JSON-ready result."""
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
    if unknown:
        raise GptkitError(
            f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}"
        )
    if not settings.precisions:
        raise GptkitError("no precisions to benchmark")
    cfg = get_preset(settings.preset).replace(context_length=settings.context_length)
    device = resolve_device(settings.device)
    for precision in settings.precisions:
        name = PRECISIONS[precision]
        if name is not None and not torch.amp.is_autocast_available(device.type):
            raise GptkitError(f"precision {precision}: no autocast on {device.type}")
        if (
            name == "bf16"
            and device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            raise GptkitError("precision bf16-mixed: this GPU has no bfloat16")
    started = time.time()
    machine = machine_info(device)
    dtypes = tuple(
        dict.fromkeys(
            ["fp32", *(PRECISIONS[p] for p in settings.precisions if PRECISIONS[p])]
        )
    )
    say(f"measuring the machine's limits on {device} ...")
    machine_limits(device, dtypes, fresh=True)
    rows = []
    variants = [(p, False) for p in settings.precisions]
    if settings.compile:
        variants += [(p, True) for p in settings.precisions]
    flops_per_token = n_params = None
    for precision, compiled in variants:
        name = precision + (" compiled" if compiled else "")
        say(
            f"{name}: {settings.warmup} warm-up + {settings.repeats} timed repeats"
            f" of {settings.steps} steps"
        )
        run, model, state = _variant(settings, precision, compiled, device)
        flops_per_token = training_flops_per_token(model, cfg.context_length)
        n_params = matmul_parameters(model)
        with PeakMemory(device) as memory:
            t0 = time.perf_counter()
            for _ in range(settings.warmup):
                run()
            warm = time.perf_counter() - t0
            m = measure(name, run, settings.repeats, warmup=0)
        peak_dtype = PRECISIONS[precision] or (
            "tf32"
            if device.type == "cuda"
            and torch.get_float32_matmul_precision() != "highest"
            else "fp32"
        )
        achieved = flops_per_token * m.tokens_per_s
        rows.append(
            {
                "name": name,
                "kind": "training",
                "precision": precision,
                "compiled": compiled,
                "seconds": list(m.seconds),
                "tokens": m.tokens,
                "tokens_per_s": m.tokens_per_s,
                "tokens_per_s_median": m.tokens / median(m.seconds),
                "achieved_tflops": achieved / 1e12,
                "peak_dtype": peak_dtype,
                "mfu": None,  # below, against the best measured peak
                "peak_memory_mib": memory.peak_mib,
                "warmup_seconds": warm,
                "final_loss": state["loss"],
            }
        )
        del run, model, state
    say("measuring the machine's limits again (the best measurement is kept) ...")
    limits = machine_limits(device, dtypes, fresh=True)
    for row in rows:
        peak = limits.peak_tflops(row["peak_dtype"])
        row["mfu"] = row["achieved_tflops"] / peak if peak else None
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
            "batch_size": settings.batch_size,
            "context_length": cfg.context_length,
            "steps": settings.steps,
            "repeats": settings.repeats,
            "warmup": settings.warmup,
            "seed": settings.seed,
            "optimizer": f"AdamW(lr={settings.lr}, weight_decay=0.1)",
        },
        "limits": limits.to_dict(),
        "rows": rows,
    }
