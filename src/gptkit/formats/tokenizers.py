"""Which tokenizer a model uses: ``--tokenizer SPEC``, the one its checkpoint
recorded, the Hugging Face checkpoint's own ``tokenizer.json``, or its
family's default (GPT-2's tiktoken encoding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gptkit.core.tokenizer import Tokenizer, gpt2_tokenizer
from gptkit.errors import GptkitError


def load_tokenizer(spec: str | None) -> Tokenizer:
    """A tokenizer by spec: ``gpt2`` (or None), a ``tokenizer.json`` file, a
    directory holding one, or ``hf:org/repo[@revision]`` (its tokenizer.json
    from the Hugging Face cache or the Hub)."""
    if spec is None or spec == "gpt2":
        return gpt2_tokenizer()
    from gptkit.formats.hf_tokenizer import load_hf_tokenizer

    return load_hf_tokenizer(spec)


def tokenizer_for(cfg: Any, extra: Any = None, spec: str | None = None) -> Tokenizer:
    """The tokenizer of a model: ``spec`` (``--tokenizer``) when given, else
    the one its checkpoint recorded, else the Hugging Face checkpoint's own
    (its directory's ``tokenizer.json``), else the family's default."""
    from gptkit.core.architectures import architecture_of

    extra = extra or {}
    recorded = (extra.get("checkpoint") or {}).get("tokenizer")
    if spec:
        return load_tokenizer(spec)
    if recorded:
        return load_tokenizer(recorded)
    arch = architecture_of(cfg)
    if extra.get("hf_dir") and getattr(type(cfg), "arch", "gpt2") != "gpt2":
        return arch.tokenizer(Path(extra["hf_dir"]))
    return arch.tokenizer(None)


def check_vocabulary(cfg: Any, tokenizer: Tokenizer, what: str = "the model") -> None:
    """A tokenizer whose ids the model's embedding cannot hold is refused."""
    if tokenizer.n_vocab > cfg.vocab_size:
        raise GptkitError(
            f"tokenizer {tokenizer.spec} has {tokenizer.n_vocab:,} ids, but {what}"
            f" has a vocabulary of {cfg.vocab_size:,}; use the model's own tokenizer"
        )
