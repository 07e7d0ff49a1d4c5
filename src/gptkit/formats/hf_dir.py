"""A Hugging Face ``transformers`` model directory written atomically:
``config.json``, ``model.safetensors`` and GPT-2's tokenizer files, in a temporary
sibling directory renamed into place at the end (a complete export or nothing)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from gptkit.errors import GptkitError

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig


def refuse_existing(out: Path) -> None:
    """An export never overwrites: ``out`` must be absent or an empty directory
    (and the place for it usable: no file on the way)."""
    from gptkit.system.storage import guarded

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

    from gptkit.formats.hf import config_to_hf, state_to_hf
    from gptkit.system.storage import (
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
