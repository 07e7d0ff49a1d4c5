"""The settings of every job, as the front ends see them: the dataclasses whose
fields are the Python keywords and the command-line options, and the helpers
that turn them into flags. Training's settings live with the trainer
(:mod:`gptkit.core.settings`); loading, evaluating and generating are the
library's own and are declared here. Torch-free (``gptkit --help`` imports
this)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gptkit.core.options import parse_pairs
from gptkit.core.settings import (
    DEVICES,
    DTYPES,
    MAX_MEMORY_HELP,
    NOT_SAVED,
    PRESET_NAMES,
    SEED,
    DataSettings,
    ModelSettings,
    Settings,
    TrainSettings,
    all_settings_flags,
    check_size,
    flag_of,
    setting,
)
from gptkit.errors import SettingError
from gptkit.runs.finetune import FinetuneSettings

MAX_SEED = SEED["le"]

__all__ = [
    "DEVICES",
    "MAX_SEED",
    "NOT_SAVED",
    "PRESET_NAMES",
    "EvalSettings",
    "FinetuneSettings",
    "GenerateSettings",
    "LoadSettings",
    "Settings",
    "TrainSettings",
    "all_settings_flags",
    "flag_of",
    "parse_pairs",
    "setting",
]


@dataclass
class LoadSettings(ModelSettings):
    """Which weights to load, and how (``gptkit.load``; ``--weights`` and friends).

    Without weights the model is a random init of ``preset`` (seeded by ``seed``).
    """

    default_preset: ClassVar[str] = "gpt2-124m"

    weights: str | None = setting(
        None,
        metavar="SPEC",
        help="Weights: RUN_DIR or checkpoint dir, hf:gpt2, hf:org/repo@rev,"
        " book:model.pth, ...",
    )
    device: str = setting(
        "auto", choices=DEVICES, help="auto: CUDA, then Apple MPS, then CPU."
    )
    dtype: str = setting(
        "fp32",
        choices=DTYPES,
        help="Precision of the weights and activations.",
    )
    seed: int | None = setting(
        None, **SEED, help="Seed of a random init (no weights).", default_help="123"
    )
    quantize: str | None = setting(
        None,
        metavar="NAME[:KEY=VALUE,...]",
        help="Weight-only quantization: a quantizer plugin (int8, int4) and its"
        " options (int4:group_size=32); activations keep --dtype.",
    )
    compile: bool = setting(
        False,
        help="Decode through torch.compile and a static KV cache (CUDA graphs on"
        " a GPU); the first generation compiles.",
    )
    max_memory: str | None = setting(
        None,
        metavar="SIZE",
        help=MAX_MEMORY_HELP,
        default_help="the device's free memory",
    )

    def check(self) -> None:
        super().check()
        check_size(self.max_memory)


@dataclass
class EvalSettings(DataSettings, LoadSettings):
    """Everything ``gptkit eval`` / :meth:`LanguageModel.evaluate` takes."""

    batch_size: int = setting(2, ge=1, help="Sequences per batch.")
    eval_iter: int | None = setting(
        None,
        ge=1,
        help="Only the first N batches of each split.",
        default_help="all",
    )
    seed: int = setting(
        123, **SEED, help="Seed of a random init (no weights) and the data order."
    )
    compile: bool = setting(False, cli=False, help="Unused by evaluation.")
    data: str | None = setting(
        None,
        metavar="PATH|NAME",
        help="Instruction data instead of a corpus: the response-only loss of its"
        " test split (the book's 85/10/5) in the model's prompt style.",
    )


@dataclass
class GenerateSettings(Settings):
    """How to continue a prompt: the sampler, its options, when to stop.

    Without ``sampler``: beam with ``num_beams`` > 1, top-p with ``top_p``,
    min-p with ``min_p``, top-k when ``temperature`` > 0 or ``top_k`` is given
    (the book's ``generate``), else greedy. The shortcuts, and ``options``, are
    options of the chosen sampler; the penalties work with every sampler.
    """

    sampler: str | None = setting(
        None,
        help="Sampler plugin (greedy, top-k, top-p, min-p, beam, ...).",
        default_help="from the options given",
    )
    options: dict[str, Any] = setting(
        {},
        flag="option",
        short="o",
        metavar="KEY=VALUE",
        help="Sampler option, repeatable (-o temperature=0.8).",
    )
    temperature: float | None = setting(
        None, ge=0.0, help="Shortcut for -o temperature=T (0 = greedy)."
    )
    top_k: int | None = setting(None, ge=1, help="Shortcut for -o top_k=K.")
    top_p: float | None = setting(
        None, gt=0.0, le=1.0, help="Nucleus sampling (sampler top-p) with this top_p."
    )
    min_p: float | None = setting(
        None, gt=0.0, le=1.0, help="Min-p sampling (sampler min-p) with this min_p."
    )
    num_beams: int | None = setting(
        None, ge=1, help="Beam search (sampler beam) with this many beams."
    )
    draft: str | None = setting(
        None,
        metavar="SPEC",
        help="Draft model of speculative decoding (implies --sampler speculative;"
        " shortcut for -o draft=SPEC).",
    )
    repetition_penalty: float | None = setting(
        None, gt=0.0, help="Penalise tokens already in the text (> 1; any sampler)."
    )
    no_repeat_ngram_size: int | None = setting(
        None, ge=0, help="Never repeat an n-gram of this size (any sampler)."
    )
    max_new_tokens: int = setting(
        50,
        ge=0,
        help="Tokens to generate per prompt (past the context length the window"
        " slides, as the book's generate does).",
    )
    stop: tuple[str, ...] = setting(
        (), metavar="STRING", help="Stop at this string; repeatable."
    )
    seed: int | None = setting(None, **SEED, help="Seed for reproducible sampling.")
    truncate: bool = setting(
        True,
        help="Keep the end of a prompt longer than the context (--no-truncate:"
        " refuse it).",
    )

    def check(self) -> None:
        super().check()
        if any(s == "" for s in self.stop):
            raise SettingError(
                "{stop} strings must not be empty (an empty string stops at once)",
                settings_class=type(self),
            )
