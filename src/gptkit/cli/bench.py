"""``gptkit bench``: speed and quality of samplers, training throughput, and
comparisons of saved results. Torch-free at import time: the benchmarks live in
:mod:`gptkit.bench` and are imported when a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gptkit.bench.settings import DEFAULT_PROMPTS, SamplingSettings, TrainingSettings
from gptkit.cli.flags import (
    PRESET_NAMES,
    comma_option,
    echo_json,
    settings_options,
    switch_option,
    was_given,
)
from gptkit.errors import GptkitError


def _progress(text: str) -> None:
    click.echo(f"bench: {text}", err=True)


def split_names(text: str | None, flag: str) -> list[str] | None:
    """``"a, b,a"`` -> ``["a", "b"]``; None when not given."""
    if text is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise GptkitError(f"{flag} needs at least one name (comma-separated)")
    return names


def parse_sampler_options(pairs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``("top-p.top_p=0.95",)`` -> ``{"top-p": {"top_p": "0.95"}}``."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        sampler, dot, key = target.strip().partition(".")
        if not sep or not dot or not sampler or not key.strip():
            raise GptkitError(
                f"-o {pair!r} is not of the form SAMPLER.KEY=VALUE"
                " (e.g. -o top-p.top_p=0.95)"
            )
        out.setdefault(sampler, {})[key.strip().replace("-", "_")] = value.strip()
    return out


def _thread_counts(text: str | None) -> list[int]:
    names = split_names(text, "--thread-counts") or []
    try:
        counts = [int(n) for n in names]
    except ValueError:
        raise GptkitError(
            f"--thread-counts takes whole numbers, e.g. 1,0; got {text!r}"
        ) from None
    if any(c < 0 for c in counts):
        raise GptkitError("--thread-counts must be 0 (torch's default) or more")
    return counts


def read_prompts_file(path: Path) -> list[str]:
    """One prompt per line; blank lines are skipped."""
    from gptkit.cli.inputs import read_file

    text = read_file(path, "prompts file")
    prompts = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not prompts:
        raise GptkitError(
            f"prompts file {path} has no prompts (one per line; blank lines are"
            " skipped)"
        )
    return prompts


def _finish(result: dict[str, Any], opts: dict[str, Any], text: str) -> None:
    """Print the table or the JSON; write --out and --plot."""
    from gptkit.bench.measure import busy_warning
    from gptkit.bench.report import plot_result
    from gptkit.bench.results import save_result

    if opts["out"] is not None:
        save_result(result, opts["out"])
        _progress(f"wrote {opts['out']}")
    if opts["plot"] is not None:
        plot_result(result, opts["plot"])
        _progress(f"wrote {opts['plot']}")
    warning = busy_warning(result["machine"])
    if warning:
        click.echo(warning, err=True)
    if opts["json_"]:
        echo_json(result)
    else:
        click.echo(text)


_output_options = [
    click.option(
        "--threads",
        type=click.IntRange(min=0),
        help="torch CPU threads; 0: torch's default (one per core)."
        " [default: sampling: 1 on the CPU (batch-1 decode steps gain little from"
        " more, and on a shared machine threads that wait for a busy core stall"
        " whole steps); training: torch's default]",
    ),
    click.option(
        "--json", "json_", is_flag=True, help="Print the full result as JSON."
    ),
    click.option(
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the result (JSON) here, for `gptkit bench compare`.",
    ),
    click.option(
        "--plot",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write a PNG chart here.",
    ),
]


def output_options(f: Any) -> Any:
    for decorator in reversed(_output_options):
        f = decorator(f)
    return f


@click.group()
def bench() -> None:
    """Benchmark samplers and training throughput; compare saved results.

    \b
    Examples:
      gptkit bench sampling                  # every installed sampler, small model
      gptkit bench sampling --weights hf:gpt2 \\
          --samplers greedy,top-k,top-p,beam,min-p \\
          --prompts prompts.txt --max-new-tokens 200 --repeats 3 \\
          --baseline no-cache --baseline transformers --out a.json --plot a.png
      gptkit bench training --preset mini --precisions fp32,bf16-true --compile
      gptkit bench compare a.json b.json
    """


@bench.command("sampling")
@settings_options(SamplingSettings, only=["weights", "preset"])
@comma_option(SamplingSettings, "samplers")
@settings_options(SamplingSettings, only=["options"])
@click.option(
    "--prompts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A text file, one prompt per line"
    f" [default: {len(DEFAULT_PROMPTS)} built-in short prompts].",
)
@settings_options(
    SamplingSettings,
    only=[
        "max_new_tokens",
        "repeats",
        "warmup",
        "baselines",
        "seed",
        "dtype",
        "quantize",
    ],
)
@switch_option(SamplingSettings, "compile")
@comma_option(SamplingSettings, "thread_counts")
@settings_options(SamplingSettings, only=["device"])
@output_options
@click.pass_context
def sampling(ctx: click.Context, **opts: Any) -> None:
    """Speed and quality of samplers, side by side.

    Per sampler: tokens/s, time to first token, per-token latency p50/p90,
    peak memory, the fraction of the memory-bandwidth bound reached, and the
    quality of the text: mean NLL of the generated tokens under the model,
    distinct-1/2/3, repeated 4-grams and self-BLEU across the repeats' samples.
    Installed third-party samplers are included automatically.

    \b
    Examples:
      gptkit bench sampling
      gptkit bench sampling --preset gpt2-124m --samplers greedy,top-p,beam \\
          --max-new-tokens 50 --repeats 2 --baseline no-cache --baseline transformers
      gptkit bench sampling --weights hf:gpt2 --prompts prompts.txt \\
          -o top-p.top_p=0.95 --json --out results.json
      gptkit bench sampling --preset gpt2-124m --samplers greedy,top-p,beam \\
          --max-new-tokens 200 --quantize int8 --quantize int4 --compile
      gptkit bench sampling --weights runs/small --samplers greedy,speculative \\
          -o speculative.draft=runs/tiny -o speculative.k=4
    """
    if opts["weights"] is not None and was_given(ctx, "preset"):
        raise GptkitError("give --weights or --preset, not both")
    samplers = split_names(opts["samplers"], "--samplers")
    if samplers is None:
        from gptkit.core.registry import get_registry

        registry = get_registry().samplers
        given = parse_sampler_options(opts["options"])
        # Samplers that need an option with no default (speculative: a draft
        # model) run only when it is given.
        samplers = [
            name
            for name in registry.names()
            if all(
                key in given.get(name, {})
                for key in getattr(registry.get(name), "required_options", ())
            )
        ]
    settings = SamplingSettings(
        samplers=samplers,
        weights=opts["weights"],
        preset=opts["preset"],
        options=parse_sampler_options(opts["options"]),
        max_new_tokens=opts["max_new_tokens"],
        repeats=opts["repeats"],
        warmup=opts["warmup"],
        seed=opts["seed"],
        baselines=list(dict.fromkeys(opts["baselines"])),
        device=opts["device"],
        dtype=opts["dtype"],
        quantize=list(dict.fromkeys(opts["quantize"])),
        compile=opts["compile"],
        thread_counts=_thread_counts(opts["thread_counts"]),
    )
    if opts["prompts"] is not None:
        settings.prompts = read_prompts_file(opts["prompts"])
        settings.prompts_source = str(opts["prompts"])
    from gptkit.bench.measure import torch_threads
    from gptkit.bench.report import format_sampling
    from gptkit.bench.sampling import run_sampling

    with torch_threads(opts["threads"], opts["device"]):
        result = run_sampling(settings, _progress)
    _finish(result, opts, format_sampling(result))


@bench.command("kernels")
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    default="gpt2-124m",
    show_default=True,
    help="Model whose linear-layer shapes are timed.",
)
@click.option(
    "--formats",
    "formats_",
    default="int8,int4",
    show_default=True,
    help="Comma-separated weight formats: int8, int4.",
)
@click.option(
    "--group-size",
    type=click.Choice(["32", "64", "128", "256"]),
    default="64",
    show_default=True,
)
@click.option("--rows", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option(
    "--thread-counts",
    default="1",
    show_default=True,
    help="Comma-separated torch thread counts (0: torch's default).",
)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--cold-mib",
    type=click.IntRange(min=0),
    default=96,
    show_default=True,
    help="Cycle through copies of each layer's weights totalling this much, past"
    " the CPU's caches (0: one copy, cache-warm).",
)
@click.option("--json", "json_", is_flag=True, help="Print the result as JSON.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
def kernels(**opts: Any) -> None:
    """The quantized layers' kernels on a model's decode shapes.

    Shape x format x backend x instruction set, with the time of one call, the
    bytes per second and the share of the memory-bandwidth bound (weight bytes
    / measured copy bandwidth). These are the backends ``backend=auto`` chooses
    among (measured per shape on first use, cached per CPU and version).

    \b
    Examples:
      gptkit bench kernels
      gptkit bench kernels --thread-counts 1,2 --rows 4 --json --out k.json
    """
    from gptkit.bench.kernels import format_kernels, run_kernels

    kinds = tuple(split_names(opts["formats_"], "--formats") or ())
    unknown = sorted(set(kinds) - {"int8", "int4"})
    if unknown:
        raise GptkitError(f"unknown format {unknown[0]!r}; choose int8, int4")
    counts = _thread_counts(opts["thread_counts"])
    counts = [c or _default_threads() for c in counts]
    result = run_kernels(
        opts["preset"],
        kinds,
        int(opts["group_size"]),
        opts["rows"],
        counts,
        opts["cold_mib"],
        opts["rounds"],
        _progress,
    )
    if opts["out"] is not None:
        import json

        opts["out"].write_text(json.dumps(result, indent=1), encoding="utf-8")
        _progress(f"wrote {opts['out']}")
    if opts["json_"]:
        echo_json(result)
    else:
        click.echo(format_kernels(result))


def _default_threads() -> int:
    from gptkit.bench.measure import usable_cores

    return usable_cores()


@bench.command("training")
@settings_options(TrainingSettings, only=["preset"])
@comma_option(TrainingSettings, "precisions")
@switch_option(TrainingSettings, "compile")
@switch_option(TrainingSettings, "baseline")
@settings_options(
    TrainingSettings,
    only=[
        "profile",
        "batch_size",
        "context_length",
        "steps",
        "repeats",
        "warmup",
        "seed",
        "device",
    ],
)
@output_options
def training(**opts: Any) -> None:
    """Training step throughput (tokens/s) and MFU against the book's step.

    Times `gptkit train`'s own step (Trainer.train_step: fused AdamW, the
    precision, torch.compile) on a fresh seeded model and a fixed random batch
    (no data loading), and the book-style baseline on the same batch with the
    same threads (torch's default unless --threads). MFU = (6N + 12LdT) x
    tokens/s / the matmul peak of the dtype the matrix products run in (a
    GPU's datasheet, else measured here).

    \b
    Examples:
      gptkit bench training
      gptkit bench training --preset gpt2-124m --context-length 256 --batch-size 2
      gptkit bench training --precisions fp32,bf16-true --compile --out train.json
      gptkit bench training --precisions bf16-true --steps 1 --profile
    """
    from gptkit.bench.measure import torch_threads
    from gptkit.bench.report import format_training
    from gptkit.bench.training import run_training

    settings = TrainingSettings(
        preset=opts["preset"],
        precisions=split_names(opts["precisions"], "--precisions") or [],
        compile=opts["compile"],
        baseline=opts["baseline"],
        profile=opts["profile"],
        batch_size=opts["batch_size"],
        context_length=opts["context_length"],
        steps=opts["steps"],
        repeats=opts["repeats"],
        warmup=opts["warmup"],
        seed=opts["seed"],
        device=opts["device"],
    )
    # Training steps are large parallel operators: torch's default threads.
    threads = 0 if opts["threads"] is None else opts["threads"]
    with torch_threads(threads, opts["device"]):
        result = run_training(settings, _progress)
    _finish(result, opts, format_training(result))


@bench.command("compare")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--min-band",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Floor of the noise band (0.05 = 5%).",
)
@click.option(
    "--fail-on-slowdown",
    is_flag=True,
    help="Exit with code 1 when a row slowed down beyond its noise band.",
)
@click.option("--json", "json_", is_flag=True, help="Print the comparison as JSON.")
@click.pass_context
def compare(ctx: click.Context, **opts: Any) -> None:
    """Changes from result A to result B, row by row.

    A slowdown is flagged when B's time per token (best repeat) exceeds A's by
    more than the noise band: the larger relative range (slowest - fastest) /
    fastest of the two runs' repeats (at least --min-band).

    \b
    Examples:
      gptkit bench sampling --out before.json   # ... change something ...
      gptkit bench sampling --out after.json
      gptkit bench compare before.json after.json --fail-on-slowdown
    """
    from gptkit.bench.results import compare_results, format_comparison, load_result

    a, b = load_result(opts["a"]), load_result(opts["b"])
    cmp = compare_results(a, b, opts["min_band"])
    if opts["json_"]:
        echo_json(cmp.to_dict())
    else:
        label = "{} ({}, {})".format
        click.echo(
            format_comparison(
                cmp,
                label(
                    opts["a"],
                    a.get("created", "?"),
                    a.get("settings", {}).get("model", "?"),
                ),
                label(
                    opts["b"],
                    b.get("created", "?"),
                    b.get("settings", {}).get("model", "?"),
                ),
            ),
            nl=False,
        )
    if opts["fail_on_slowdown"] and cmp.slowdowns:
        ctx.exit(1)
