"""``gptkit export``: write weights in Hugging Face ``transformers`` format."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gptkit.core.errors import GptkitError

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def refuse_existing(out: Path) -> None:
    """An export never overwrites: ``out`` must be absent or an empty directory
    (and the place for it usable: no file on the way)."""
    from gptkit.core.storage import guarded

    with guarded(out, "use"):
        if out.exists() and not out.is_dir():
            raise GptkitError(f"{out} exists and is not a directory")
        if out.is_dir() and any(out.iterdir()):
            raise GptkitError(f"{out} exists and is not empty; choose another OUT_DIR")
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise GptkitError(
                        f"cannot write {out}: {parent} is a file, not a directory"
                    )
                break


def _write_tokenizer(tmp: Path, cfg: GPTConfig) -> list[str]:
    """GPT-2's tokenizer files (gptkit's only tokenizer) in transformers' names:
    OpenAI's ``encoder.json`` and ``vocab.bpe`` are ``vocab.json`` and
    ``merges.txt``. Skipped when the vocabulary is not GPT-2's."""
    from gptkit.core.tokenizer import ENDOFTEXT, N_VOCAB, vocabulary_files

    if cfg.vocab_size != N_VOCAB:
        return []
    data = vocabulary_files()
    (tmp / "vocab.json").write_bytes((data / "encoder.json").read_bytes())
    (tmp / "merges.txt").write_bytes((data / "vocab.bpe").read_bytes())
    settings = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": cfg.context_length,
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "unk_token": ENDOFTEXT,
        "add_prefix_space": False,
    }
    (tmp / "tokenizer_config.json").write_text(
        json.dumps(settings, indent=2) + "\n", encoding="utf-8"
    )
    return ["vocab.json", "merges.txt", "tokenizer_config.json"]


def write_hf_dir(
    out: Path, cfg: GPTConfig, state: dict[str, torch.Tensor]
) -> list[str]:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) for
    ``transformers.GPT2LMHeadModel`` into ``out`` atomically: everything goes to
    a temporary sibling directory, which is renamed into place at the end.
    ``state`` (checked, in gptkit's names) is emptied on the way."""
    from safetensors.torch import save_file

    from gptkit.core.hf_format import config_to_hf, state_to_hf
    from gptkit.core.storage import (
        default_file_mode,
        ensure_dir,
        fsync_dir,
        fsync_file,
        guarded,
    )

    dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
    tensors = state_to_hf(cfg, state)
    ensure_dir(out.parent)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        with guarded(out):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
            del tensors
            config = config_to_hf(cfg, dtype)
            (tmp / "config.json").write_text(
                json.dumps(config, indent=2) + "\n", encoding="utf-8"
            )
            files = ["config.json", "model.safetensors", *_write_tokenizer(tmp, cfg)]
            mode = default_file_mode()
            for name in files:
                os.chmod(tmp / name, mode)  # safetensors creates its file private
                fsync_file(tmp / name)
            fsync_dir(tmp)
            refuse_existing(out)  # again: something may have appeared meanwhile
            if out.is_dir():
                out.rmdir()  # empty (checked); rename cannot replace it everywhere
            os.replace(tmp, out)
            fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files


@click.command("export")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option(
    "--weights",
    required=True,
    metavar="SPEC",
    help="Weights to export: RUN_DIR or checkpoint dir, book:model.pth, hf:...",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["hf"]),
    default="hf",
    show_default=True,
    help="hf: a transformers GPT2LMHeadModel directory.",
)
@click.option(
    "--dtype",
    type=click.Choice(list(DTYPE_NAMES)),
    help="Cast the weights [default: keep their dtype].",
)
@click.option(
    "--n-heads",
    type=click.IntRange(min=1),
    help="Attention heads, for book .pth weights (which do not record them).",
)
def export(**opts: Any) -> None:
    """Write weights in Hugging Face transformers format to OUT_DIR.

    OUT_DIR gets config.json, model.safetensors and GPT-2's tokenizer files;
    transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR) loads it and computes
    the same logits. A model without query/key/value biases gets zero biases; an
    untied output head is written as lm_head.weight with tie_word_embeddings
    false. OUT_DIR must not exist or be empty: it is written in a temporary
    directory that is renamed at the end, so it holds a complete export or
    nothing.

    \b
    Examples:
      gptkit export --weights runs/20261128-101500 --format hf my-gpt2
      gptkit export --weights book:model.pth --format hf my-gpt2
      python -c "import transformers as t; t.pipeline('text-generation', 'my-gpt2')"
    """
    from gptkit.core.device import resolve_dtype
    from gptkit.core.weights import (
        check_state_dict,
        load_weights,
        require_float_weights,
    )

    out: Path = opts["out_dir"]
    refuse_existing(out)
    loaded = load_weights(opts["weights"], {"n_heads": opts["n_heads"]})
    require_float_weights(loaded, opts["weights"], "export")
    cfg, state = loaded.config, loaded.state_dict
    check_state_dict(cfg, state)
    state = cfg.without_tied(state)
    if opts["dtype"]:
        dtype = resolve_dtype(opts["dtype"])
        for key in list(state):
            state[key] = state[key].to(dtype)
    size = sum(t.numel() * t.element_size() for t in state.values())
    files = write_hf_dir(out, cfg, state)
    head = "tied" if cfg.tie_embeddings else "untied"
    click.echo(
        f"exported {loaded.source} ({cfg.n_layers} layers, {cfg.emb_dim} wide,"
        f" {cfg.n_heads} head{'s' if cfg.n_heads != 1 else ''}, {head} output head,"
        f" {size / 1e6:,.1f} MB) to {out}"
    )
    click.echo(f"files: {', '.join(files)}")
    click.echo(
        f"load it with: transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})"
    )
