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
        "hf",
        choices=("hf",),
        help="hf: a transformers directory (GPT2LMHeadModel, LlamaForCausalLM, ...).",
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
    merge: bool = setting(
        False,
        help="Merge a LoRA run's adapters into its base weights (required for a"
        " run finetuned with --lora, whose checkpoints hold only the adapters).",
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
    #: The transformers class that loads it (GPT2LMHeadModel, ...).
    model_class: str = "GPT2LMHeadModel"


def export(
    out: str | Path, settings: ExportSettings | None = None, /, **kwargs: Any
) -> ExportResult:
    """Write ``weights`` to the directory ``out`` (absent or empty) in
    ``format``; ``transformers.GPT2LMHeadModel.from_pretrained(out)`` then
    computes the same logits. A model without query/key/value biases gets zero
    biases; an untied output head is written as ``lm_head.weight``."""
    from gptkit.core.architectures import architecture_of
    from gptkit.core.device import resolve_dtype
    from gptkit.core.weights import check_state_dict, load_weights
    from gptkit.formats.hf_dir import refuse_existing, write_hf_dir
    from gptkit.formats.tokenizers import tokenizer_for
    from gptkit.runs.preflight import require_float_weights

    settings = settings or ExportSettings.create(kwargs)
    out = Path(out)
    refuse_existing(out)
    _check_merge(str(settings.weights), settings.merge)
    loaded = load_weights(str(settings.weights), {"n_heads": settings.n_heads})
    require_float_weights(loaded, str(settings.weights), "export")
    cfg, state = loaded.config, loaded.state_dict
    check_state_dict(cfg, state)
    arch = architecture_of(cfg)
    tokenizer = None
    if arch.name != "gpt2":  # the checkpoint's own tokenizer files go along
        tokenizer = tokenizer_for(cfg, loaded.extra)
    state = cfg.without_tied(state)
    if settings.dtype:
        dtype = resolve_dtype(settings.dtype)
        for key in list(state):
            state[key] = state[key].to(dtype)
    size = sum(t.numel() * t.element_size() for t in state.values())
    files = write_hf_dir(out, cfg, state, tokenizer)
    return ExportResult(
        out,
        files,
        loaded.source,
        cfg.n_layers,
        cfg.emb_dim,
        cfg.n_heads,
        cfg.tie_embeddings,
        size / 1e6,
        arch.config_to_hf(cfg)["architectures"][0],
    )


def _check_merge(spec: str, merge: bool) -> None:
    """``merge`` goes with (and only with) weights that hold adapters."""
    from gptkit.core.checkpoints.layout import read_config, resolve_checkpoint_dir
    from gptkit.core.weights import split_spec

    prefix, location = split_spec(spec)
    adapter = None
    if prefix == "native":
        adapter = read_config(resolve_checkpoint_dir(Path(location))).get("adapter")
    if merge and not adapter:
        raise SettingError(f"{{merge}}: {spec} holds no LoRA adapters to merge")
    if adapter and not merge:
        raise SettingError(
            f"{spec} holds LoRA adapters only (base: {adapter.get('base')});"
            " add {merge} to export them merged into their base"
        )
