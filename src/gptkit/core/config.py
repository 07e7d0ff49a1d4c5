"""Model configuration: the book's ``GPT_CONFIG_124M`` fields and size presets.

Sizes of the GPT-2 family follow Radford et al. (2019), table 2, and the book's
chapter 5 (``model_configs``). Presets use the book's training defaults
(dropout 0.1, no query/key/value bias, untied output head); weights loaded from
OpenAI's checkpoints set ``qkv_bias`` and ``tie_embeddings`` from the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from gptkit.errors import GptkitError

GPT2_VOCAB_SIZE = 50257
#: A tied output head shares the token embedding's tensor: the state-dict key
#: of the shared copy -> the key of the tensor it shares.
TIED_HEAD = {"out_head.weight": "tok_emb.weight"}


@dataclass(frozen=True)
class GPTConfig:
    """Hyperparameters of a GPT-2-style decoder (names as in the book)."""

    vocab_size: int = GPT2_VOCAB_SIZE
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    # GPT-2 ties the output head to the token embedding; the book trains untied.
    tie_embeddings: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GptkitError(f"model setting {name} must be a positive integer")
        if self.emb_dim % self.n_heads:
            raise GptkitError(
                f"emb_dim ({self.emb_dim}) must be divisible by"
                f" n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise GptkitError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(
            self, **{k: v for k, v in changes.items() if v is not None}
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def tied_keys(self) -> dict[str, str]:
        """State-dict keys that are not tensors of their own in this model (a
        tied head: :data:`TIED_HEAD`) -> the key of the tensor they share."""
        return dict(TIED_HEAD) if self.tie_embeddings else {}

    def without_tied(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` without the keys that share another tensor (what is stored,
        checked and assigned)."""
        tied = self.tied_keys()
        return {k: v for k, v in state.items() if k not in tied}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GptkitError(f"unknown model setting(s): {', '.join(unknown)}")
        return cls(**data)

    def num_parameters(self) -> int:
        """Parameter count (shared embedding counted once when tied)."""
        d, v, n = self.emb_dim, self.vocab_size, self.n_layers
        bias = 3 * d if self.qkv_bias else 0
        per_block = (3 * d * d + bias) + (d * d + d) + (8 * d * d + 5 * d) + 4 * d
        head = 0 if self.tie_embeddings else v * d
        return v * d + self.context_length * d + n * per_block + 2 * d + head


PRESETS: dict[str, GPTConfig] = {
    # The GPT-2 family (the book's GPT_CONFIG_124M and chapter 5's model_configs).
    "gpt2-124m": GPTConfig(emb_dim=768, n_layers=12, n_heads=12),
    "gpt2-355m": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16),
    "gpt2-774m": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20),
    "gpt2-1558m": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25),
    # Small models for CPUs: `tiny` trains in seconds (tests), `mini` is the
    # default of `gptkit train` (a few minutes on two cores).
    # No dropout: runs this short underfit rather than overfit.
    "tiny": GPTConfig(
        context_length=64, emb_dim=64, n_layers=2, n_heads=2, drop_rate=0.0
    ),
    "mini": GPTConfig(
        context_length=128, emb_dim=128, n_layers=4, n_heads=4, drop_rate=0.0
    ),
    "small": GPTConfig(context_length=256, emb_dim=384, n_layers=6, n_heads=6),
}


def get_preset(name: str) -> GPTConfig:
    """The preset called ``name``; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise GptkitError(
            f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}"
        ) from None
