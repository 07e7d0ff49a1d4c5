"""A finetuning run's data side (the book's chapter 7): instruction records
through a prompt style into padded batches, the per-epoch sample of the first
validation record, and ``responses.json`` after training. Everything else —
the trainer, checkpoints, resume, loggers — is the one ``gptkit train`` uses
(:mod:`gptkit.runs.compose`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gptkit.core.settings import (
    ADJUSTABLE,
    PRESET_NAMES,
    Settings,
    TrainSettings,
    check_size,
    setting,
)
from gptkit.errors import GptkitError, SettingError
from gptkit.runs.jobdata import RunData

if TYPE_CHECKING:
    from gptkit.core.config import GPTConfig
    from gptkit.core.distributed import DistContext
    from gptkit.core.interfaces import LoadedWeights, PromptStyle
    from gptkit.core.training.trainer import Trainer
    from gptkit.formats.instructions import Record

RESPONSES = "responses.json"
#: The book's allowed_max_length: GPT-2's context.
BOOK_MAX_LENGTH = 1024


@dataclass
class FinetuneSettings(TrainSettings):
    """Everything ``gptkit finetune`` / :func:`gptkit.finetune` takes: the
    training settings with the book's chapter-7 defaults, instruction data in
    place of a corpus."""

    default_preset: ClassVar[str] = "gpt2-124m"
    job: ClassVar[str] = "finetune"

    preset: str | None = setting(
        None,
        choices=PRESET_NAMES,
        help="Model size preset of a random init (without --weights).",
        default_help="gpt2-124m",
    )
    data: str | None = setting(
        None,
        metavar="PATH|NAME",
        help="Instruction data: a JSON list of {instruction, input, output}"
        " records (the book's format), JSON Lines, or chat records {messages:"
        " [...]}; or a built-in data set (instruction-data: the book's 1,100"
        " examples, downloaded once).",
    )
    corpus: tuple[str, ...] = setting((), cli=False, help="Unused by finetuning.")
    stride: int | None = setting(None, cli=False, help="Unused by finetuning.")
    drop_rate: float | None = setting(
        0.0, ge=0.0, lt=1.0, help="Dropout rate (the book finetunes without)."
    )
    train_ratio: float | None = setting(
        0.85, gt=0.0, lt=1.0, help="Share of the records used for training."
    )
    test_ratio: float = setting(
        0.1,
        ge=0.0,
        lt=1.0,
        help="Share of the records held out for testing (responses.json); the"
        " rest validates.",
    )
    prompt_style: str | None = setting(
        None,
        help="Prompt style plugin (alpaca, phi3, chat-template); recorded in the"
        " run, so generate, chat and serve apply it.",
        default_help="the model's chat template if it has one, else alpaca",
    )
    mask_instructions: bool = setting(
        False,
        help="Learn only the responses: the prompt tokens are left out of the"
        " loss (the book's exercise 7.2).",
    )
    allowed_max_length: int | None = setting(
        None,
        ge=2,
        help="Cut examples to this many tokens (the book's allowed_max_length);"
        " examples whose prompt alone is longer are skipped and counted.",
        default_help="the context length (1024 for GPT-2)",
    )
    test_responses: int | None = setting(
        None,
        ge=0,
        resume=ADJUSTABLE,
        help="Write the responses to the first N test records to"
        " RUN/responses.json after training (0: none).",
        default_help="all",
    )
    response_tokens: int = setting(
        256,
        ge=1,
        resume=ADJUSTABLE,
        help="Most new tokens of each test response (greedy, stopping at"
        " <|endoftext|>).",
    )
    lora: str | None = setting(
        None,
        metavar="r=R,alpha=A[,dropout=P,targets=T+T]",
        help="Train low-rank adapters instead of the weights (LoRA, the book's"
        " appendix E): frozen base, adapters on every linear layer unless"
        " targets= names some (W_query+W_value); checkpoints hold only the"
        " adapters. NAME:KEY=VALUE,... picks another adapter plugin.",
    )
    quantize: str | None = setting(
        None,
        metavar="int8|int4[:KEY=VALUE,...]",
        help="With --lora: quantize the frozen base (QLoRA): its linear layers"
        " hold int8 or int4 weights, the adapters train in float;"
        " --weights RUN quantizes the base again the same way and merges.",
    )
    epochs: int = setting(2, ge=1, help="Passes over the training records.")
    lr: float = setting(5e-5, gt=0.0, help="Peak learning rate of AdamW.")
    eval_freq: int = setting(5, ge=1, help="Evaluate every N optimizer steps.")
    start_context: str | None = setting(
        None,
        help="Prompt of the sample printed after each epoch ('' for none).",
        default_help="the first validation record, in the prompt style",
    )

    def check(self) -> None:
        Settings.check(self)
        cls = type(self)
        check_size(self.max_memory)
        if self.corpus or self.stride is not None:
            raise SettingError(
                "finetuning reads {data}, not {corpus}/{stride}", settings_class=cls
            )
        if self.lora is not None:
            from gptkit.formats.adapters import get_adapter

            get_adapter(self.lora)
        if self.quantize is not None:
            from gptkit.core.quantize import get_quantizer

            if self.lora is None:
                raise SettingError(
                    "{quantize} quantizes the frozen base of a LoRA run (QLoRA):"
                    " give {lora} too",
                    settings_class=cls,
                )
            try:
                get_quantizer(self.quantize)
            except GptkitError as exc:
                raise SettingError(
                    f"{{quantize}} {self.quantize}: {exc}", settings_class=cls
                ) from None
        if self.split_ratio() + self.test_ratio >= 1.0:
            raise SettingError(
                f"{{train_ratio}} {self.split_ratio()} + {{test_ratio}}"
                f" {self.test_ratio} leaves nothing for validation; keep the sum"
                " below 1",
                settings_class=cls,
            )

    def split_ratio(self) -> float:
        return 0.85 if self.train_ratio is None else self.train_ratio


def style_record(style: PromptStyle) -> dict[str, Any]:
    """How a run records its prompt style (config.json, checkpoints)."""
    from dataclasses import asdict

    return {"name": style.name, "options": asdict(style.options)}


def style_from_record(record: dict[str, Any]) -> PromptStyle:
    """The prompt style a run recorded."""
    from gptkit.core.registry import get_registry

    return get_registry().prompt_styles.create(
        record["name"], dict(record.get("options") or {})
    )


def recorded_style(extra: dict[str, Any]) -> dict[str, Any] | None:
    """The prompt style recorded with loaded weights (a finetuned run's
    checkpoint), if any."""
    record = (extra.get("checkpoint") or {}).get("prompt_style")
    return record if isinstance(record, dict) and "name" in record else None


def resolve_style(
    name: str | None, loaded: LoadedWeights | None, tokenizer: Any = None
) -> PromptStyle:
    """The style named, else the one the weights were finetuned with, else the
    chat template of the model's tokenizer (its ``tokenizer_config.json``)
    when it has one, else ``alpaca`` (GPT-2)."""
    from gptkit.core.registry import get_registry

    extra = loaded.extra if loaded is not None else {}
    recorded = recorded_style(extra)
    if name is None and recorded is not None:
        return style_from_record(recorded)
    source = extra
    if getattr(tokenizer, "chat_template", None):
        source = vars(tokenizer)
    template = source.get("chat_template")
    name = name or ("chat-template" if template else "alpaca")
    options: dict[str, Any] = {}
    if name == "chat-template" and template:
        options = {
            "template": template,
            "bos_token": source.get("bos_token") or "",
            "eos_token": source.get("eos_token") or "",
        }
    return get_registry().prompt_styles.create(name, options)


class FinetuneData:
    """Builds a finetuning run's :class:`~gptkit.runs.compose.RunData`."""

    @staticmethod
    def load(
        settings: FinetuneSettings,
        cfg: GPTConfig,
        dist: DistContext,
        loaded: LoadedWeights | None,
        tokenizer: Any = None,
    ) -> RunData:
        from gptkit.core.data import _splits
        from gptkit.formats.instruction_batches import (
            InstructionCollator,
            InstructionDataset,
            pad_id,
        )
        from gptkit.formats.instructions import (
            inference_prompt,
            read_instruction_data,
            split_records,
        )
        from gptkit.runs.guard import warn

        if settings.data is None:  # (a resume's partial settings may lack it)
            raise SettingError(
                "{data} is required: a JSON/JSONL file of instruction records or"
                " instruction-data (the book's)"
            )
        style = resolve_style(settings.prompt_style, loaded, tokenizer)
        pad = pad_id(tokenizer)
        data = read_instruction_data(settings.data)
        if dist.is_main:
            for problem in data.problems:
                warn(problem)
        split = split_records(data.records, settings.split_ratio(), settings.test_ratio)
        max_length = settings.allowed_max_length or min(
            BOOK_MAX_LENGTH, cfg.context_length
        )
        if max_length > cfg.context_length:
            raise SettingError(
                f"{{allowed_max_length}} {max_length} exceeds the model's context"
                f" length {cfg.context_length}"
            )
        train_set = InstructionDataset(split.train, style, max_length, tokenizer)
        val_set = InstructionDataset(split.val, style, max_length, tokenizer)
        skipped = train_set.skipped + val_set.skipped
        if skipped and dist.is_main:
            warn(
                f"skipped {skipped} record(s) whose prompt is {max_length} tokens or"
                " longer (the allowed max length): no response token would remain"
            )
        if not len(val_set):
            raise SettingError(
                "no validation record fits in {allowed_max_length}"
                f" {max_length}; use more data or another {{train_ratio}}"
            )
        if len(train_set) // dist.world_size < settings.batch_size:
            raise SettingError(
                f"too little data: {len(train_set)} training records make no full"
                f" batch of {{batch_size}} {settings.batch_size}"
            )
        order = settings.data_order or ("book" if dist.world_size == 1 else "seeded")
        tokens = train_set.token_count(len(train_set)) + val_set.token_count(
            len(val_set)
        )
        splits = _splits(
            train_set,
            val_set,
            batch_size=settings.batch_size,
            seed=settings.seed,
            rank=dist.rank,
            world_size=dist.world_size,
            lazy=False,
            characters=sum(
                len(r.instruction)
                + len(r.input)
                + len(r.reply())
                + sum(len(m["content"]) for m in (r.messages or [])[:-1])
                for r in data.records
            ),
            total_tokens=tokens,
            order=order,
            collate_fn=InstructionCollator(
                pad_token_id=pad,
                allowed_max_length=max_length,
                mask_prompt=settings.mask_instructions,
            ),
        )
        record = style_record(style)
        extra: dict[str, Any] = {"prompt_style": record}
        adapt = None
        if settings.lora is not None:
            adapt, extra["adapter"] = _adapter(settings, cfg)
        test = split.test
        if settings.test_responses is not None:
            test = test[: settings.test_responses]

        def after_fit(trainer: Trainer, summary: dict[str, Any]) -> None:
            if not trainer.dist.is_main or trainer.run_dir is None or not test:
                return
            path = write_responses(
                trainer, style, test, trainer.run_dir, settings.response_tokens
            )
            summary["responses"] = str(path)

        return RunData(
            splits=splits,
            config={
                "corpus": [settings.data],
                "records": len(data.records),
                "malformed": len(data.problems),
                "skipped": skipped,
                "train_records": len(train_set),
                "test_records": len(split.test),
                "val_records": len(val_set),
                "train_ratio": settings.split_ratio(),
                "test_ratio": settings.test_ratio,
                "allowed_max_length": max_length,
                "mask_instructions": settings.mask_instructions,
            },
            start_context=inference_prompt(style, split.val[0]),
            order=order,
            reseed=True,
            run_config=extra,
            checkpoint_info=extra,
            after_fit=after_fit,
            adapt=adapt,
        )


def _adapter(settings: FinetuneSettings, cfg: GPTConfig) -> tuple[Any, dict[str, Any]]:
    """The function that puts ``--lora``'s adapter on the model, and its record."""
    from gptkit.formats.adapters import (
        adapter_record,
        apply_adapter,
        base_spec,
        get_adapter,
        quantize_base,
        trainable_count,
    )

    assert settings.lora is not None
    if settings.weights is None:
        raise SettingError(
            "{lora} adapts pretrained weights: give {weights} (the base the"
            " adapters apply to)"
        )
    adapter = get_adapter(settings.lora)
    trainable = trainable_count(cfg, adapter)  # checks the targets, too
    quantize = settings.quantize
    record = adapter_record(
        adapter, base_spec(settings.weights), trainable, quantize=quantize
    )
    if quantize is not None:
        record["base_parameters"] = cfg.num_parameters()

    def adapt(model: Any) -> None:
        if quantize is not None:
            quantize_base(model, quantize)
        apply_adapter(model, adapter)

    return adapt, record


def respond(
    model: Any,
    style: PromptStyle,
    records: list[Record],
    *,
    max_new_tokens: int = 256,
    on_done: Any = None,
    tokenizer: Any = None,
) -> list[str]:
    """Greedy responses to ``records``, each generated alone (the book's
    ``generate`` with ``eos_id=50256``; with another ``tokenizer``, stopping
    at any of its end-of-sequence ids), cleaned by the style."""
    from gptkit.core.generate import generate_tokens
    from gptkit.core.registry import get_registry
    from gptkit.core.tokenizer import EOT_ID, gpt2_tokenizer
    from gptkit.formats.instruction_batches import encode_text
    from gptkit.formats.instructions import inference_prompt

    tokenizer = tokenizer or gpt2_tokenizer()
    eos = tuple(tokenizer.eos_ids) or (EOT_ID,)
    greedy = get_registry().samplers.create("greedy")
    out = []
    for record in records:
        result = generate_tokens(
            model,
            [encode_text(inference_prompt(style, record), tokenizer)],
            greedy,
            max_new_tokens=max_new_tokens,
            eos_id=eos if len(eos) > 1 else eos[0],
        )[0]
        ids = result.new_ids[:-1] if result.finish_reason == "eos" else result.new_ids
        out.append(style.clean_response(tokenizer.decode(ids)))
        if on_done is not None:
            on_done()
    return out


def write_responses(
    trainer: Trainer,
    style: PromptStyle,
    records: list[Record],
    run_dir: Path,
    max_new_tokens: int,
) -> Path:
    """``RUN/responses.json``: the test records with a ``model_response`` each,
    in the book's ``instruction-data-with-response.json`` format."""
    from gptkit.core.training import parallel
    from gptkit.system.progress import progress_bar, progress_wanted
    from gptkit.system.storage import atomic_write

    if parallel.is_sharded(trainer.model):
        raise GptkitError("test responses of an FSDP run: load the run and generate")
    bar = progress_bar(
        len(records), desc="responses", unit="record", enabled=progress_wanted()
    )
    try:
        responses = respond(
            trainer.model,
            style,
            records,
            max_new_tokens=max_new_tokens,
            on_done=lambda: bar.update(1),
            tokenizer=getattr(trainer, "tokenizer", None),
        )
    finally:
        bar.close()
    rows = [
        {**r.raw, "model_response": text}
        for r, text in zip(records, responses, strict=True)
    ]
    path = run_dir / RESPONSES
    atomic_write(path, json.dumps(rows, indent=4) + "\n")
    return path
