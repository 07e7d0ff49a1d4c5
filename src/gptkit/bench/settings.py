"""What ``gptkit bench sampling`` and ``gptkit bench training`` run, declared once
with :func:`~gptkit.core.settings.setting` (torch-free).

Each field's default, help, bounds and choices live here; the command line
(:mod:`gptkit.cli.bench`) derives its options from these declarations, so no
default is written twice. :mod:`gptkit.bench.sampling` and
:mod:`gptkit.bench.training` re-export the classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gptkit.core.precision import PRECISIONS
from gptkit.core.settings import DEVICES, DTYPES, PRESET_NAMES, SEED, setting

#: Short prompts of the default run: varied registers, a few tokens each.
DEFAULT_PROMPTS = (
    "Every effort moves you",
    "The function returns",
    "Once upon a time",
    "In the beginning of the year",
    "The best way to learn a language is",
    "Scientists have discovered",
    "My favourite recipe for bread",
    "The history of the city",
)
DEFAULT_PRESET = "mini"
BASELINES = ("no-cache", "transformers")
_DEVICE_HELP = "auto: CUDA, then Apple MPS, then CPU."


@dataclass
class SamplingSettings:
    """What to run. ``options[sampler]`` are that sampler's options (strings
    from the CLI or values), applied over
    :data:`gptkit.bench.runners.SAMPLER_OPTIONS` and the sampler's defaults."""

    samplers: list[str] = setting(
        help="Samplers to run, comma-separated",
        metavar="A,B,...",
        default_help="every installed one",
    )
    prompts: list[str] = setting(
        list(DEFAULT_PROMPTS), cli=False, help="The prompts, one sample each."
    )
    prompts_source: str = setting(
        "built-in", cli=False, help="Where the prompts came from (a file's path)."
    )
    weights: str | None = setting(
        None,
        metavar="SPEC",
        help="Weights to benchmark (hf:gpt2, RUN_DIR, ...) instead of a preset.",
    )
    preset: str = setting(
        DEFAULT_PRESET,
        choices=PRESET_NAMES,
        help="Preset shape with random weights (tied head).",
    )
    options: dict[str, dict[str, Any]] = setting(
        {},
        flag="option",
        short="o",
        metavar="SAMPLER.KEY=VALUE",
        help="A sampler option, repeatable (-o top-p.top_p=0.95).",
    )
    max_new_tokens: int = setting(
        32, ge=1, help="Tokens generated per prompt (no end-of-text stop)."
    )
    repeats: int = setting(
        3,
        ge=1,
        help="Timed passes over the prompts (also the samples per prompt for"
        " self-BLEU).",
    )
    warmup: int = setting(1, ge=0, help="Untimed passes first.")
    seed: int = setting(0, **SEED, help="")
    baselines: list[str] = setting(
        [],
        flag="baseline",
        choices=BASELINES,
        help="Also run the book's no-cache loop or transformers' generate on the"
        " same weights; repeatable. Adds a ratio column.",
    )
    device: str = setting("auto", choices=DEVICES, help=_DEVICE_HELP)
    dtype: str = setting("fp32", choices=DTYPES, help="")
    #: quantizer specs (int8, int4:group_size=32): each adds a row per sampler
    quantize: list[str] = setting(
        [],
        metavar="NAME[:KEY=VALUE,...]",
        help="Also run every sampler on a quantized copy (int8, int4,"
        " int4:group_size=32); repeatable. Adds a row per sampler.",
    )
    #: also run every sampler (and quantization) with the compiled decode step
    compile: bool = setting(
        False,
        help="Also run every row with the compiled decode step (torch.compile).",
    )
    #: torch thread counts: each contender gets a row per count (0: torch's
    #: default); empty: one row each at the current count
    thread_counts: list[int] = setting(
        [],
        help="Comma-separated torch thread counts (0: torch's default, one per"
        " core): every contender gets a row per count, e.g. 1,0 (a user's `gptkit"
        " generate` runs with torch's default). Overrides --threads.",
    )


@dataclass
class TrainingSettings:
    """What to run; ``compile``: also measure every precision compiled;
    ``baseline``: the book-style step too; ``profile``: one profiled step per
    variant."""

    preset: str = setting(
        "mini", choices=PRESET_NAMES, help="Model shape (random weights)."
    )
    precisions: list[str] = setting(
        ["fp32", "bf16-mixed", "bf16-true"],
        metavar="P,Q,...",
        help="Comma-separated: " + ", ".join(PRECISIONS) + ".",
    )
    compile: bool = setting(
        False, help="Also measure every precision under torch.compile."
    )
    baseline: bool = setting(
        True,
        help="Also time the book-style step (explicit-mask attention, per-tensor"
        " AdamW, fp32) on the same batch and threads; ratios are against it.",
    )
    profile: bool = setting(
        False,
        help="Run one more step of each variant under torch.profiler: the share of"
        " forward, backward and optimizer, and of each kind of operator.",
    )
    batch_size: int = setting(4, ge=1, help="")
    context_length: int | None = setting(
        None, ge=1, help="Tokens per sequence", default_help="the preset's"
    )
    steps: int = setting(4, ge=1, help="Optimizer steps per timed repeat.")
    repeats: int = setting(3, ge=1, help="")
    warmup: int = setting(1, ge=0, help="")
    seed: int = setting(0, **SEED, help="")
    lr: float = setting(4e-4, gt=0.0, cli=False, help="AdamW's learning rate.")
    device: str = setting("auto", choices=DEVICES, help=_DEVICE_HELP)
