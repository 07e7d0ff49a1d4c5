"""Settings, declared once (torch-free).

Every setting of a run, an evaluation, a generation or a model load is a field
of a dataclass here, declared with :func:`setting`. From that one declaration
come:

- the Python keyword (``gptkit.train(lr=4e-4)``: the field's name);
- the command-line option (``--lr``: the name with dashes; a repeatable option
  takes the field's singular ``flag``, e.g. ``--corpus`` for ``corpus``,
  ``--logger`` for ``loggers``), its help text, type, bounds and default
  (:func:`gptkit.cli.flags.settings_options` builds it);
- validation (:meth:`Settings.validate`: types and bounds from the metadata,
  then the class's own cross-field checks), with errors that name the setting
  (:class:`~gptkit.errors.SettingError`: ``lr`` in Python, ``--lr`` on
  the command line);
- what a run directory's ``config.json`` records (:meth:`Settings.to_dict`),
  and what ``--resume`` may change: ``resume="fixed"`` settings keep the run's
  value (giving another is an error), ``"adjustable"`` ones take the run's
  value unless given again, ``"none"`` ones are not saved at all.

Adding a setting is one field here (and its use where it takes effect).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from gptkit.core.options import bounds_problem, convert_value
from gptkit.core.precision import PRECISIONS
from gptkit.errors import GptkitError, SettingError

S = TypeVar("S", bound="Settings")

FIXED, ADJUSTABLE, NOT_SAVED = "fixed", "adjustable", "none"
PRESET_NAMES = (  # by family: GPT-2 (and the book's small ones), Llama 3, Qwen3
    "gpt2-124m", "gpt2-355m", "gpt2-774m", "gpt2-1558m", "tiny", "mini", "small",
    "llama-3.2-1b", "llama-3.2-3b", "llama-tiny",
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-tiny",
)  # fmt: skip
MODEL_FIELDS = (
    "context_length",
    "emb_dim",
    "n_layers",
    "n_heads",
    "drop_rate",
    "qkv_bias",
)
DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_MEMORY_HELP = (
    "Refuse to start when the estimated memory use exceeds SIZE (8GB, 512MiB);"
    " the device's free memory is always checked."
)
DTYPES = ("fp32", "bf16", "fp16")
SEED = {"ge": 0, "le": 2**63 - 1}  # torch takes 64 bits: room for offsets (rank)


def setting(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    short: str | None = None,
    metavar: str | None = None,
    resume: str = FIXED,
    cli: bool = True,
    default_help: str | None = None,
    **bounds: Any,
) -> Any:
    """A settings field: its default, help text and everything derived from it.

    :param flag: the command-line option without dashes when it is not the
        field's name with dashes (``logger`` for ``loggers``).
    :param short: a one-letter alias (``s`` -> ``-s``).
    :param resume: ``"fixed"``, ``"adjustable"`` or ``"none"`` (see the module).
    :param cli: False for settings only Python can give (objects).
    :param default_help: what ``--help`` says the default is, when the default
        is computed (``None`` meaning "the preset's").
    :param bounds: ``ge``, ``gt``, ``le``, ``lt``, ``choices``.
    """
    unknown = set(bounds) - {"ge", "gt", "le", "lt", "choices"}
    if unknown:
        raise TypeError(f"unknown setting metadata {sorted(unknown)}")
    if resume not in (FIXED, ADJUSTABLE, NOT_SAVED):
        raise ValueError(f"resume must be fixed, adjustable or none, not {resume!r}")
    metadata = {
        "help": help,
        "flag": flag,
        "short": short,
        "metavar": metavar,
        "resume": resume,
        "cli": cli,
        "default_help": default_help,
        **bounds,
    }
    if isinstance(default, list | dict | set):
        factory = type(default)
        copy = factory(default)
        return field(default_factory=lambda: factory(copy), metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(f: dataclasses.Field[Any]) -> str:
    """The command-line option of a settings field, with its dashes."""
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


@dataclass
class Settings:
    """Base of the settings dataclasses: conversion, validation, (de)serialisation."""

    @classmethod
    def field_map(cls) -> dict[str, dataclasses.Field[Any]]:
        return {f.name: f for f in fields(cls)}

    @classmethod
    def hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def create(cls: type[S], values: Mapping[str, Any] | None = None, **kw: Any) -> S:
        """Settings from keyword values (Python objects, or strings from a
        command line), converted to each field's type and validated."""
        given = {**(values or {}), **kw}
        known = cls.field_map()
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise SettingError(
                f"unknown setting {{{unknown[0]}}}; valid settings: "
                + ", ".join(known),
                settings_class=cls,
            )
        hints = cls.hints()
        converted = {}
        for name, value in given.items():
            hint = hints[name]
            if isinstance(value, str) and _is_sequence(hint):
                value = (value,)  # corpus="the-verdict": one item
            try:
                converted[name] = convert_value(value, hint)
            except (TypeError, ValueError) as exc:
                raise SettingError(f"{{{name}}}: {exc}", settings_class=cls) from None
        settings = cls(**converted)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Bounds of every field, then :meth:`check` (cross-field rules)."""
        for f in fields(self):
            problem = bounds_problem(getattr(self, f.name), f.metadata)
            if problem is not None:
                raise SettingError(f"{{{f.name}}} {problem}", settings_class=type(self))
        self.check()

    def check(self) -> None:
        """Rules across fields; subclasses raise :class:`SettingError`."""

    def replace(self: S, **changes: Any) -> S:
        """A validated copy with some settings changed."""
        return type(self).create({**self.to_dict(), **changes})

    def to_dict(self, *, saved_only: bool = False) -> dict[str, Any]:
        """JSON-ready values; ``saved_only``: those a run directory records."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in fields(self)
            if not (saved_only and f.metadata.get("resume") == NOT_SAVED)
        }

    @classmethod
    def names(cls, resume: str | None = None) -> list[str]:
        """Field names, all or those of one ``resume`` kind."""
        return [
            f.name
            for f in fields(cls)
            if resume is None or f.metadata.get("resume") == resume
        ]


def _is_sequence(hint: Any) -> bool:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        return True
    return any(typing.get_origin(a) in (tuple, list) for a in args)


def merge_for_resume(
    cls: type[S], saved: Mapping[str, Any], given: Mapping[str, Any]
) -> S:
    """The settings of a resumed run: ``saved`` (from its ``config.json``) with
    the ``given`` values of adjustable and unsaved settings. A fixed setting
    given with a different value is an error naming it."""
    known = cls.field_map()
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise SettingError(f"unknown setting {{{unknown[0]}}}", settings_class=cls)
    probe = cls.create(given)  # converts and validates what was given
    merged = {k: v for k, v in saved.items() if k in known}
    for name in given:
        kind = known[name].metadata.get("resume")
        value = _jsonable(getattr(probe, name))
        if kind == FIXED and name in saved and saved[name] != value:
            raise SettingError(
                f"{{{name}}} {_show(value)} differs from the run's"
                f" {_show(saved[name])}; a resumed run keeps its settings",
                settings_class=cls,
            )
        merged[name] = value
    return cls.create(merged)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    return str(value)


def all_settings_flags() -> dict[str, str]:
    """Setting name -> command-line option, over every settings class."""
    out: dict[str, str] = {}
    pending: list[type[Settings]] = [Settings]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for f in fields(cls):
            out.setdefault(f.name, flag_of(f))
    return out


# -- the settings of each job ---------------------------------------------------


@dataclass
class ModelSettings(Settings):
    """The shape of a freshly initialised model: a preset and its overrides.

    With weights, the model's shape comes from them; a preset or shape setting
    given as well must agree with the weights (or is an error), except the
    context length and the dropout rate, which may change.
    """

    #: The preset used when none is given.
    default_preset: ClassVar[str] = "mini"

    preset: str | None = setting(
        None,
        help="Model size preset of any family: gpt2-124m ... gpt2-1558m, tiny,"
        " mini, small, llama-3.2-1b, llama-tiny, qwen3-0.6b ... qwen3-8b,"
        " qwen3-tiny (docs/model-families.md).",
        default_help="mini; with --arch, the family's",
    )
    arch: str | None = setting(
        None,
        help="Model family: gpt2, llama, qwen3 or a plugin's (gptkit plugins).",
        default_help="the preset's",
    )
    tokenizer: str | None = setting(
        None,
        metavar="SPEC",
        help="Tokenizer: gpt2, a tokenizer.json, a directory holding one, or"
        " hf:org/repo.",
        default_help="the checkpoint's; gpt2 for a new model",
    )
    context_length: int | None = setting(
        None, ge=1, help="Context length in tokens (overrides the preset)."
    )
    emb_dim: int | None = setting(None, ge=1, help="Embedding width.")
    n_layers: int | None = setting(None, ge=1, help="Transformer blocks.")
    n_heads: int | None = setting(None, ge=1, help="Attention heads.")
    drop_rate: float | None = setting(None, ge=0.0, lt=1.0, help="Dropout rate.")
    qkv_bias: bool | None = setting(
        None, help="Bias in the query/key/value projections."
    )

    def model_overrides(self) -> dict[str, Any]:
        """The model fields given (not None)."""
        return {
            k: getattr(self, k) for k in MODEL_FIELDS if getattr(self, k) is not None
        }

    def preset_name(self) -> str:
        if self.preset is None and self.arch is not None:
            from gptkit.core.architectures import get_architecture

            return get_architecture(self.arch).default_preset or self.default_preset
        return self.preset or self.default_preset

    def check(self) -> None:
        super().check()
        cls = type(self)
        if self.arch is not None:
            from gptkit.core.architectures import get_architecture

            try:
                get_architecture(self.arch)
            except GptkitError as exc:
                raise SettingError(
                    "{arch} " + str(exc).removeprefix("unknown model family "),
                    settings_class=cls,
                ) from None
        if self.preset is not None:
            from gptkit.core.architectures import all_presets, preset_architecture

            presets = all_presets()
            if self.preset not in presets:
                raise SettingError(
                    f"{{preset}} {self.preset!r} is unknown; choose one of:"
                    f" {', '.join(presets)}",
                    settings_class=cls,
                )
            family = preset_architecture(self.preset)
            if self.arch is not None and family != self.arch:
                raise SettingError(
                    f"{{preset}} {self.preset} is a {family} preset, not {self.arch}",
                    settings_class=cls,
                )

    def weight_hints(self) -> dict[str, Any]:
        """What weights must agree with (or, for files that do not record it,
        take from): the preset and shape settings given."""
        shape = ("emb_dim", "n_layers", "n_heads", "qkv_bias")
        hints = {k: getattr(self, k) for k in shape if getattr(self, k) is not None}
        if self.preset is not None:
            hints["preset"] = self.preset
        return hints


@dataclass
class DataSettings(Settings):
    """A corpus, split and cut into windows (the book's chapter 2 and 5)."""

    #: The corpus used when none is given.
    default_corpus: ClassVar[tuple[str, ...]] = ("python-docs",)

    corpus: tuple[str, ...] = setting(
        (),
        metavar="NAME|PATH",
        help="A corpus plugin name (python-docs, the-verdict, ...) or a text file,"
        " directory or glob; repeatable.",
        default_help="python-docs",
    )
    batch_size: int = setting(8, ge=1, help="Sequences per batch.")
    stride: int | None = setting(
        None,
        ge=1,
        help="Tokens between window starts.",
        default_help="the context length",
    )
    train_ratio: float | None = setting(
        None,
        gt=0.0,
        lt=1.0,
        help="Share of the characters used for training.",
        default_help="0.9",
    )
    seed: int = setting(123, **SEED, help="Seed of the initial weights, data order.")

    def corpus_names(self) -> tuple[str, ...]:
        return self.corpus or self.default_corpus

    def split_ratio(self) -> float:
        return 0.9 if self.train_ratio is None else self.train_ratio


@dataclass
class TrainSettings(DataSettings, ModelSettings):
    """Everything ``gptkit train`` / :func:`gptkit.train` takes."""

    #: The command that writes such runs (recorded in config.json).
    job: ClassVar[str] = "train"

    data: str | None = setting(
        None,
        metavar="DIR",
        help="A corpus made by `gptkit prepare` (streamed from disk) instead of"
        " --corpus.",
    )
    weights: str | None = setting(
        None,
        metavar="SPEC",
        help="Start from these weights instead of a random init (hf:gpt2,"
        " RUN_DIR, ...).",
    )
    epochs: int = setting(4, ge=1, help="Passes over the training data.")
    lr: float = setting(1e-3, gt=0.0, help="Peak learning rate of AdamW.")
    weight_decay: float = setting(0.1, ge=0.0, help="AdamW's decoupled weight decay.")
    eval_freq: int = setting(20, ge=1, help="Evaluate every N optimizer steps.")
    eval_iter: int = setting(5, ge=1, help="Batches per evaluation.")
    start_context: str | None = setting(
        None,
        help="Prompt of the sample printed after each epoch ('' for none).",
        default_help="the corpus's; 'Every effort moves you' for the-verdict",
    )
    max_new_tokens: int = setting(50, ge=0, help="Tokens in each epoch's sample.")
    sampler: str = setting(
        "greedy",
        help="Sampler plugin of each epoch's sample (the book's is greedy).",
    )
    scheduler: str = setting(
        "constant",
        help="Learning-rate scheduler plugin (constant, warmup-cosine, ...).",
    )
    scheduler_options: dict[str, Any] = setting(
        {},
        flag="scheduler-option",
        short="s",
        metavar="KEY=VALUE",
        help="Scheduler option, repeatable (-s warmup=0.2).",
    )
    max_norm: float | None = setting(
        None, gt=0.0, help="Clip the gradient norm to this value."
    )
    grad_accum: int = setting(1, ge=1, help="Batches per optimizer step.")
    max_steps: int | None = setting(None, ge=1, help="Stop after N optimizer steps.")
    data_order: str | None = setting(
        None,
        choices=("book", "seeded"),
        help="book: the book's DataLoader shuffling with the global RNG (reproduces"
        " its numbers exactly); seeded: a permutation per epoch from --seed (any"
        " number of processes, prepared corpora).",
        default_help="book for one process and --corpus, else seeded",
    )
    precision: str = setting(
        "fp32",
        choices=tuple(PRECISIONS),
        help="fp32; bf16-mixed/fp16-mixed: autocast with fp32 weights (fp16 with a"
        " grad scaler); bf16-true: bf16 forward and backward, fp32 master weights"
        " and AdamW.",
    )
    strategy: str = setting(
        "ddp",
        choices=("ddp", "fsdp"),
        resume=ADJUSTABLE,
        help="With several processes: ddp (each holds the whole model) or fsdp"
        " (parameters, gradients and AdamW state sharded; sharded checkpoints).",
    )
    activation_checkpointing: bool = setting(
        False,
        resume=ADJUSTABLE,
        help="Recompute each block's activations in the backward pass (less"
        " memory for long contexts, about a third more compute).",
    )
    compile: bool = setting(
        False,
        resume=ADJUSTABLE,
        help="Compile the model with torch.compile (slow start, faster steps).",
    )
    loggers: tuple[str, ...] = setting(
        ("console", "jsonl", "plot"),
        flag="logger",
        resume=ADJUSTABLE,
        help="Logger plugin, repeatable.",
    )
    checkpoint_every: int | None = setting(
        None, ge=1, resume=ADJUSTABLE, help="Also save a checkpoint every N steps."
    )
    keep_last: int | None = setting(
        None, ge=1, resume=ADJUSTABLE, help="Keep only the newest N checkpoints."
    )
    out: str | None = setting(
        None,
        metavar="DIR",
        resume=NOT_SAVED,
        help="Run directory.",
        default_help="runs/<timestamp>",
    )
    device: str = setting(
        "auto",
        choices=DEVICES,
        resume=NOT_SAVED,
        help="auto: CUDA, then Apple MPS, then CPU.",
    )
    max_memory: str | None = setting(
        None,
        metavar="SIZE",
        resume=NOT_SAVED,
        help=MAX_MEMORY_HELP,
        default_help="the device's free memory",
    )

    def check(self) -> None:
        super().check()
        cls = type(self)
        check_size(self.max_memory)
        if self.data is not None:
            if self.corpus:
                raise SettingError(
                    "{data} and {corpus} both name the training text; give one",
                    settings_class=cls,
                )
            if self.train_ratio is not None:
                raise SettingError(
                    "{train_ratio} is fixed when the corpus is prepared (the"
                    " ratio given to gptkit prepare); drop it with {data}",
                    settings_class=cls,
                )
            if self.data_order == "book":
                raise SettingError(
                    "{data_order} book needs {corpus}, not {data}", settings_class=cls
                )


def check_size(size: str | None) -> None:
    if size is not None:
        from gptkit.core.options import parse_size

        parse_size(size)
