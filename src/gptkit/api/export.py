"""``gptkit.export``: weights written in another tool's format (today Hugging
Face ``transformers``' GPT-2 directory), the library side of ``gptkit export``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptkit.core.settings import DTYPES, Settings, setting
from gptkit.errors import SettingError


@dataclass
class ExportSettings(Settings):
    """Everything ``gptkit export`` / :func:`gptkit.export` takes (but the
    output directory)."""

    weights: str | None = setting(
        None,
        metavar="SPEC",
        help="Weights to export: RUN_DIR or checkpoint dir, book:model.pth, hf:...",
    )
    format: str = setting(
        "hf", choices=("hf",), help="hf: a transformers GPT2LMHeadModel directory."
    )
    dtype: str | None = setting(
        None,
        choices=DTYPES,
        help="Cast the weights.",
        default_help="keep their dtype",
    )
    n_heads: int | None = setting(
        None,
        ge=1,
        help="Attention heads, for book .pth weights (which do not record them).",
    )

    def check(self) -> None:
        if not self.weights:
            raise SettingError("{weights} is required (the weights to export)")


@dataclass
class ExportResult:
    """What an export wrote: the directory, its files, the model's shape."""

    out: Path
    files: list[str]
    source: str
    n_layers: int
    emb_dim: int
    n_heads: int
    tied_head: bool
    megabytes: float


def export(
    out: str | Path, settings: ExportSettings | None = None, /, **kwargs: Any
) -> ExportResult:
    """Write ``weights`` to the directory ``out`` (absent or empty) in
    ``format``; ``transformers.GPT2LMHeadModel.from_pretrained(out)`` then
    computes the same logits. A model without query/key/value biases gets zero
    biases; an untied output head is written as ``lm_head.weight``."""
    from gptkit.core.device import resolve_dtype
    from gptkit.core.weights import check_state_dict, load_weights
    from gptkit.formats.hf_dir import refuse_existing, write_hf_dir

    settings = settings or ExportSettings.create(kwargs)
    out = Path(out)
    refuse_existing(out)
    loaded = load_weights(str(settings.weights), {"n_heads": settings.n_heads})
    cfg, state = loaded.config, loaded.state_dict
    check_state_dict(cfg, state)
    state = cfg.without_tied(state)
    if settings.dtype:
        dtype = resolve_dtype(settings.dtype)
        for key in list(state):
            state[key] = state[key].to(dtype)
    size = sum(t.numel() * t.element_size() for t in state.values())
    files = write_hf_dir(out, cfg, state)
    return ExportResult(
        out,
        files,
        loaded.source,
        cfg.n_layers,
        cfg.emb_dim,
        cfg.n_heads,
        cfg.tie_embeddings,
        size / 1e6,
    )
