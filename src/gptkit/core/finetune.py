"""A finetuning run's data side (the book's chapter 7): instruction records
through a prompt style into padded batches, the per-epoch sample of the first
validation record, and ``responses.json`` after training. Everything else —
the trainer, checkpoints, resume, loggers — is the one ``gptkit train`` uses
(:mod:`gptkit.core.runs`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.core.errors import GptkitError, SettingError

if TYPE_CHECKING:
    from gptkit.core.config import GPTConfig
    from gptkit.core.distributed import DistContext
    from gptkit.core.instructions import Record
    from gptkit.core.interfaces import LoadedWeights, PromptStyle
    from gptkit.core.runs import RunData
    from gptkit.core.settings import FinetuneSettings
    from gptkit.core.train import Trainer

RESPONSES = "responses.json"
#: The book's allowed_max_length: GPT-2's context.
BOOK_MAX_LENGTH = 1024


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


def resolve_style(name: str | None, loaded: LoadedWeights | None) -> PromptStyle:
    """The style named, else the one the weights were finetuned with, else the
    tokenizer's chat template when it has one, else ``alpaca`` (GPT-2)."""
    from gptkit.core.registry import get_registry

    extra = loaded.extra if loaded is not None else {}
    recorded = recorded_style(extra)
    if name is None and recorded is not None:
        return style_from_record(recorded)
    template = extra.get("chat_template")
    name = name or ("chat-template" if template else "alpaca")
    options: dict[str, Any] = {}
    if name == "chat-template" and template:
        options = {
            "template": template,
            "bos_token": extra.get("bos_token") or "",
            "eos_token": extra.get("eos_token") or "",
        }
    return get_registry().prompt_styles.create(name, options)


class FinetuneData:
    """Builds a finetuning run's :class:`~gptkit.core.runs.RunData`."""

    @staticmethod
    def load(
        settings: FinetuneSettings,
        cfg: GPTConfig,
        dist: DistContext,
        loaded: LoadedWeights | None,
    ) -> RunData:
        from gptkit.core.data import _splits
        from gptkit.core.instruction_data import InstructionCollator, InstructionDataset
        from gptkit.core.instructions import (
            inference_prompt,
            read_instruction_data,
            split_records,
        )
        from gptkit.core.runguard import warn
        from gptkit.core.runs import RunData

        assert settings.data is not None
        style = resolve_style(settings.prompt_style, loaded)
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
        train_set = InstructionDataset(split.train, style, max_length)
        val_set = InstructionDataset(split.val, style, max_length)
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
    from gptkit.core.lora import (
        adapter_record,
        apply_adapter,
        base_spec,
        get_adapter,
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
    record = adapter_record(adapter, base_spec(settings.weights), trainable)

    def adapt(model: Any) -> None:
        apply_adapter(model, adapter)

    return adapt, record


def respond(
    model: Any,
    style: PromptStyle,
    records: list[Record],
    *,
    max_new_tokens: int = 256,
    on_done: Any = None,
) -> list[str]:
    """Greedy responses to ``records``, each generated alone (the book's
    ``generate`` with ``eos_id=50256``), cleaned by the style."""
    from gptkit.core.generate import generate_tokens
    from gptkit.core.instructions import inference_prompt
    from gptkit.core.registry import get_registry
    from gptkit.core.tokenizer import decode, encode

    greedy = get_registry().samplers.create("greedy")
    out = []
    for record in records:
        result = generate_tokens(
            model,
            [encode(inference_prompt(style, record))],
            greedy,
            max_new_tokens=max_new_tokens,
        )[0]
        ids = result.new_ids[:-1] if result.finish_reason == "eos" else result.new_ids
        out.append(style.clean_response(decode(ids)))
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
    from gptkit.core import parallel
    from gptkit.core.progress import progress_bar, progress_wanted
    from gptkit.core.storage import atomic_write

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
