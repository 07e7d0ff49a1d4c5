"""Qwen3 (dense): Llama 3's decoder plus RMSNorm of each head's queries and keys
and an explicit head dimension (Qwen3 technical report, 2025). The model is
:class:`~gptkit.plugins.architectures.llama_model.LlamaModel` with ``qk_norm``;
the Hugging Face mapping is Llama's plus ``q_norm``/``k_norm``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gptkit.errors import GptkitError
from gptkit.plugins.architectures.llama import GPT2_VOCAB, Llama, LlamaConfig


@dataclass(frozen=True)
class Qwen3Config(LlamaConfig):
    """Hyperparameters of a dense Qwen3 decoder."""

    arch: ClassVar[str] = "qwen3"

    vocab_size: int = 151936
    context_length: int = 40960
    emb_dim: int = 1024
    n_heads: int = 16
    n_kv_heads: int = 8
    n_layers: int = 28
    hidden_dim: int = 3072
    head_dim: int = 128
    rope_base: float = 1000000.0
    norm_eps: float = 1e-6
    qk_norm: bool = True
    tie_embeddings: bool = True


def _presets() -> dict[str, Qwen3Config]:
    # Qwen's Qwen3-0.6B ... Qwen3-8B (their config.json on the Hub).
    return {
        "qwen3-0.6b": Qwen3Config(),
        "qwen3-1.7b": Qwen3Config(emb_dim=2048, hidden_dim=6144),
        "qwen3-4b": Qwen3Config(emb_dim=2560, n_heads=32, n_layers=36, hidden_dim=9728),
        "qwen3-8b": Qwen3Config(
            emb_dim=4096,
            n_heads=32,
            n_layers=36,
            hidden_dim=12288,
            tie_embeddings=False,
        ),
        # For tests and CPUs (GPT-2's vocabulary, its tokenizer by default).
        "qwen3-tiny": Qwen3Config(
            vocab_size=GPT2_VOCAB,
            context_length=64,
            emb_dim=64,
            n_heads=4,
            n_kv_heads=2,
            n_layers=2,
            hidden_dim=192,
            head_dim=32,
        ),
    }


class Qwen3(Llama):
    """Alibaba's Qwen3 dense models (``Qwen3ForCausalLM``)."""

    name = "qwen3"
    summary = (
        "Qwen3 dense (Llama 3 + QK-norm, explicit head_dim): qwen3-0.6b ..."
        " qwen3-8b, qwen3-tiny."
    )
    hf_model_types: ClassVar[tuple[str, ...]] = ("qwen3",)
    default_preset: ClassVar[str] = "qwen3-tiny"
    hf_defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "head_dim": 128,
    }
    hf_class: ClassVar[str] = "Qwen3ForCausalLM"

    def config_class(self) -> type:
        return Qwen3Config

    def presets(self) -> dict[str, Any]:
        return _presets()

    def _unsupported(self, data: dict[str, Any]) -> list[str]:
        problems = super()._unsupported(data)
        if data.get("use_sliding_window"):
            problems.append("sliding-window attention")
        return problems

    def _extra_config(self, data: dict[str, Any], where: str) -> dict[str, Any]:
        return {"qk_norm": True}

    def config_to_hf(self, cfg: Any, dtype: str = "float32") -> dict[str, Any]:
        data = super().config_to_hf(cfg, dtype)
        data.update(use_sliding_window=False, sliding_window=None)
        if not cfg.qk_norm:
            raise GptkitError("a Qwen3 checkpoint always has q_norm and k_norm")
        return data
