"""Llama 3 (3.0, 3.1, 3.2): config, presets, Hugging Face mapping (torch-free at
import; the model is :mod:`gptkit.plugins.architectures.llama_model`).

Hugging Face's ``LlamaForCausalLM`` stores its linear layers in ``nn.Linear``
layout (out, in) and its rotary halves in the layout gptkit computes, so every
tensor is a copy under another name:

=========================================  ===============================
Hugging Face                               gptkit
=========================================  ===============================
``model.embed_tokens.weight``              ``tok_emb.weight``
``model.layers.{i}.self_attn.q_proj``      ``trf_blocks.{i}.att.W_query``
``... k_proj / v_proj / o_proj``           ``att.W_key / W_value / out_proj``
``... self_attn.q_norm / k_norm`` (Qwen3)  ``att.q_norm / k_norm``
``... mlp.gate_proj / up_proj / down_proj`` ``ff.fc1 / fc2 / fc3``
``... input_layernorm``                    ``norm1``
``... post_attention_layernorm``           ``norm2``
``model.norm.weight``                      ``final_norm.weight``
``lm_head.weight`` (absent when tied)      ``out_head.weight``
=========================================  ===============================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gptkit.core.config import ModelConfig
from gptkit.core.interfaces import Architecture
from gptkit.errors import GptkitError, SettingError

if TYPE_CHECKING:
    import torch

#: GPT-2's vocabulary: the tiny presets train with GPT-2's tokenizer unless
#: ``--tokenizer`` names another.
GPT2_VOCAB = 50257
LM_HEAD = "lm_head.weight"
_HF_PREFIX = "model."


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    """Hyperparameters of a Llama 3 decoder (Qwen3 adds ``qk_norm``).

    ``head_dim`` 0 means ``emb_dim // n_heads``. ``rope_factor`` 1 is plain
    RoPE (Llama 3.0); Llama 3.1/3.2 scale by 8/32 with the low/high frequency
    factors and the original context of their ``rope_scaling``.
    """

    arch: ClassVar[str] = "llama"

    vocab_size: int = 128256
    context_length: int = 131072
    emb_dim: int = 2048
    n_heads: int = 32
    n_kv_heads: int = 8
    n_layers: int = 16
    hidden_dim: int = 8192
    head_dim: int = 0
    rope_base: float = 500000.0
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    norm_eps: float = 1e-5
    drop_rate: float = 0.0
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "context_length",
            "emb_dim",
            "n_heads",
            "n_kv_heads",
            "n_layers",
            "hidden_dim",
            "rope_original_context",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GptkitError(f"model setting {name} must be a positive integer")
        if self.head_dim == 0:
            if self.emb_dim % self.n_heads:
                raise GptkitError(
                    f"emb_dim ({self.emb_dim}) must be divisible by n_heads"
                    f" ({self.n_heads}) when head_dim is not given"
                )
            object.__setattr__(self, "head_dim", self.emb_dim // self.n_heads)
        if not isinstance(self.head_dim, int) or self.head_dim < 2 or self.head_dim % 2:
            raise GptkitError(
                f"head_dim must be a positive even integer (rotary embeddings"
                f" rotate pairs), got {self.head_dim}"
            )
        if self.n_heads % self.n_kv_heads:
            raise GptkitError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads"
                f" ({self.n_kv_heads}): each key/value head serves a group of"
                " query heads"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise GptkitError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.rope_base <= 0 or self.rope_factor <= 0 or self.norm_eps <= 0:
            raise GptkitError("rope_base, rope_factor and norm_eps must be > 0")
        if self.rope_factor != 1.0 and not (
            0 < self.rope_low_freq_factor < self.rope_high_freq_factor
        ):
            raise GptkitError(
                "rope scaling needs 0 < rope_low_freq_factor < rope_high_freq_factor"
            )

    def replace(self, **changes: Any) -> LlamaConfig:
        """A copy with some fields changed; a head_dim derived from emb_dim and
        n_heads follows them."""
        changes = {k: v for k, v in changes.items() if v is not None}
        reshaped = "emb_dim" in changes or "n_heads" in changes
        if reshaped and "head_dim" not in changes:
            if self.head_dim * self.n_heads == self.emb_dim:
                changes["head_dim"] = 0
        if "n_heads" in changes and "n_kv_heads" not in changes:
            if changes["n_heads"] % self.n_kv_heads:
                changes["n_kv_heads"] = changes["n_heads"]
        return dataclasses.replace(self, **changes)

    def num_parameters(self) -> int:
        """Parameter count (a tied head counted once)."""
        d, v, hd = self.emb_dim, self.vocab_size, self.head_dim
        q, kv = self.n_heads * hd, self.n_kv_heads * hd
        attention = d * q + 2 * d * kv + q * d
        if self.qkv_bias:
            attention += q + 2 * kv
        if self.qk_norm:
            attention += 2 * hd
        per_block = attention + 3 * d * self.hidden_dim + 2 * d
        head = 0 if self.tie_embeddings else v * d
        return v * d + self.n_layers * per_block + d + head


def _presets() -> dict[str, LlamaConfig]:
    llama32 = {
        "vocab_size": 128256,
        "context_length": 131072,
        "rope_base": 500000.0,
        "rope_factor": 32.0,
        "rope_low_freq_factor": 1.0,
        "rope_high_freq_factor": 4.0,
        "rope_original_context": 8192,
        "tie_embeddings": True,
    }
    return {
        # Meta's Llama 3.2 1B and 3B (their config.json on the Hub).
        "llama-3.2-1b": LlamaConfig(
            emb_dim=2048,
            n_heads=32,
            n_kv_heads=8,
            n_layers=16,
            hidden_dim=8192,
            **llama32,
        ),
        "llama-3.2-3b": LlamaConfig(
            emb_dim=3072,
            n_heads=24,
            n_kv_heads=8,
            n_layers=28,
            hidden_dim=8192,
            **llama32,
        ),
        # For tests and CPUs: GPT-2's vocabulary (its tokenizer by default),
        # Llama 3.1's frequency scaling over a 32-token original context.
        "llama-tiny": LlamaConfig(
            vocab_size=GPT2_VOCAB,
            context_length=64,
            emb_dim=64,
            n_heads=4,
            n_kv_heads=2,
            n_layers=2,
            hidden_dim=192,
            rope_base=10000.0,
            rope_factor=8.0,
            rope_original_context=32,
            tie_embeddings=True,
        ),
    }


# -- Hugging Face config.json -------------------------------------------------------


def _int(data: dict[str, Any], key: str, default: Any, where: str) -> int:
    value = data.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GptkitError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _number(data: dict[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise GptkitError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


def rope_settings(
    data: dict[str, Any], default_base: float, where: str
) -> dict[str, Any]:
    """RoPE fields from ``rope_parameters`` (transformers 5) or ``rope_theta`` +
    ``rope_scaling`` (the Hub's files); Llama 3's scaling or none."""
    params = data.get("rope_parameters")
    scaling = params if isinstance(params, dict) else data.get("rope_scaling")
    base_from = params if isinstance(params, dict) and "rope_theta" in params else data
    out: dict[str, Any] = {
        "rope_base": _number(base_from, "rope_theta", default_base, where)
    }
    if not isinstance(scaling, dict):
        if scaling is not None:
            raise GptkitError(f"{where}: rope_scaling must be an object")
        return out
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return out
    if kind != "llama3":
        raise GptkitError(
            f"{where}: rope scaling {kind!r} is not implemented (gptkit has"
            " Llama 3's 'llama3' scaling and plain RoPE)"
        )
    out.update(
        rope_factor=_number(scaling, "factor", 8.0, where),
        rope_low_freq_factor=_number(scaling, "low_freq_factor", 1.0, where),
        rope_high_freq_factor=_number(scaling, "high_freq_factor", 4.0, where),
        rope_original_context=_int(
            scaling,
            "original_max_position_embeddings",
            data.get("max_position_embeddings", 8192),
            where,
        ),
    )
    return out


class Llama(Architecture):
    """Meta's Llama 3 family (``LlamaForCausalLM``)."""

    name = "llama"
    summary = (
        "Llama 3 (RMSNorm, SwiGLU, RoPE with 3.1 scaling, GQA): llama-3.2-1b,"
        " llama-3.2-3b, llama-tiny."
    )
    hf_model_types: ClassVar[tuple[str, ...]] = ("llama",)
    default_preset: ClassVar[str] = "llama-tiny"
    #: transformers' defaults for fields a config.json leaves out.
    hf_defaults: ClassVar[dict[str, Any]] = {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    hf_class: ClassVar[str] = "LlamaForCausalLM"

    def config_class(self) -> type:
        return LlamaConfig

    def presets(self) -> dict[str, Any]:
        return _presets()

    def build(self, cfg: Any) -> torch.nn.Module:
        from gptkit.plugins.architectures.llama_model import LlamaModel

        return LlamaModel(cfg)

    # -- config.json ---------------------------------------------------------------

    def _unsupported(self, data: dict[str, Any]) -> list[str]:
        problems = []
        if data.get("hidden_act", "silu") != "silu":
            problems.append(f"hidden_act {data['hidden_act']!r}")
        if data.get("mlp_bias"):
            problems.append("mlp_bias")
        if data.get("pretraining_tp", 1) not in (1, None):
            problems.append(f"pretraining_tp {data['pretraining_tp']}")
        return problems

    def _extra_config(self, data: dict[str, Any], where: str) -> dict[str, Any]:
        return {}

    def config_from_hf(self, data: dict[str, Any], where: str) -> Any:
        defaults = self.hf_defaults
        problems = self._unsupported(data)
        if problems:
            raise GptkitError(
                f"{where}: this {self.name} variant uses {', '.join(problems)}, which"
                " gptkit does not implement"
            )
        d = _int(data, "hidden_size", defaults["hidden_size"], where)
        heads = _int(
            data, "num_attention_heads", defaults["num_attention_heads"], where
        )
        kv_heads = _int(data, "num_key_value_heads", heads, where)
        head_dim = data.get("head_dim", defaults.get("head_dim"))
        if head_dim is None:
            if d % heads:
                raise GptkitError(
                    f"{where}: hidden_size {d} is not divisible by"
                    f" num_attention_heads {heads} and no head_dim is given"
                    " (contradictory shapes)"
                )
            head_dim = d // heads
        head_dim = _int({"head_dim": head_dim}, "head_dim", 0, where)
        if heads % kv_heads:
            raise GptkitError(
                f"{where}: num_attention_heads {heads} is not a multiple of"
                f" num_key_value_heads {kv_heads} (contradictory shapes)"
            )
        fields: dict[str, Any] = {
            "vocab_size": _int(data, "vocab_size", defaults["vocab_size"], where),
            "context_length": _int(
                data,
                "max_position_embeddings",
                defaults["max_position_embeddings"],
                where,
            ),
            "emb_dim": d,
            "n_heads": heads,
            "n_kv_heads": kv_heads,
            "n_layers": _int(
                data, "num_hidden_layers", defaults["num_hidden_layers"], where
            ),
            "hidden_dim": _int(
                data, "intermediate_size", defaults["intermediate_size"], where
            ),
            "head_dim": head_dim,
            "norm_eps": _number(data, "rms_norm_eps", defaults["rms_norm_eps"], where),
            "qkv_bias": bool(data.get("attention_bias", False)),
            "tie_embeddings": bool(
                data.get("tie_word_embeddings", defaults["tie_word_embeddings"])
            ),
            **rope_settings(data, defaults["rope_theta"], where),
            **self._extra_config(data, where),
        }
        try:
            return self.config_class()(**fields)
        except GptkitError as exc:
            raise GptkitError(f"{where}: {exc}") from None

    def config_to_hf(self, cfg: Any, dtype: str = "float32") -> dict[str, Any]:
        data: dict[str, Any] = {
            "architectures": [self.hf_class],
            "model_type": self.hf_model_types[0],
            "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.context_length,
            "hidden_size": cfg.emb_dim,
            "intermediate_size": cfg.hidden_dim,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads,
            "head_dim": cfg.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_base,
            "rope_scaling": None,
            "attention_bias": cfg.qkv_bias,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "tie_word_embeddings": cfg.tie_embeddings,
            "torch_dtype": dtype,
        }
        if cfg.rope_factor != 1.0:
            data["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": cfg.rope_factor,
                "low_freq_factor": cfg.rope_low_freq_factor,
                "high_freq_factor": cfg.rope_high_freq_factor,
                "original_max_position_embeddings": cfg.rope_original_context,
            }
        return data

    # -- tensors -----------------------------------------------------------------

    def hf_tensors(self, cfg: Any) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Hugging Face name -> (gptkit name, shape), in gptkit's order."""
        d, v, hd = cfg.emb_dim, cfg.vocab_size, cfg.head_dim
        q, kv = cfg.n_heads * hd, cfg.n_kv_heads * hd
        out: dict[str, tuple[str, tuple[int, ...]]] = {
            "model.embed_tokens.weight": ("tok_emb.weight", (v, d))
        }
        for i in range(cfg.n_layers):
            hf, ours = f"model.layers.{i}.", f"trf_blocks.{i}."
            block = {
                "self_attn.q_proj.weight": ("att.W_query.weight", (q, d)),
                "self_attn.k_proj.weight": ("att.W_key.weight", (kv, d)),
                "self_attn.v_proj.weight": ("att.W_value.weight", (kv, d)),
            }
            if cfg.qkv_bias:
                block.update(
                    {
                        "self_attn.q_proj.bias": ("att.W_query.bias", (q,)),
                        "self_attn.k_proj.bias": ("att.W_key.bias", (kv,)),
                        "self_attn.v_proj.bias": ("att.W_value.bias", (kv,)),
                    }
                )
            block["self_attn.o_proj.weight"] = ("att.out_proj.weight", (d, q))
            if cfg.qk_norm:
                block["self_attn.q_norm.weight"] = ("att.q_norm.weight", (hd,))
                block["self_attn.k_norm.weight"] = ("att.k_norm.weight", (hd,))
            block.update(
                {
                    "mlp.gate_proj.weight": ("ff.fc1.weight", (cfg.hidden_dim, d)),
                    "mlp.up_proj.weight": ("ff.fc2.weight", (cfg.hidden_dim, d)),
                    "mlp.down_proj.weight": ("ff.fc3.weight", (d, cfg.hidden_dim)),
                    "input_layernorm.weight": ("norm1.weight", (d,)),
                    "post_attention_layernorm.weight": ("norm2.weight", (d,)),
                }
            )
            out.update({hf + k: (ours + g, s) for k, (g, s) in block.items()})
        out["model.norm.weight"] = ("final_norm.weight", (d,))
        if not cfg.tie_embeddings:
            out[LM_HEAD] = ("out_head.weight", (v, d))
        return out

    def state_from_hf(
        self, cfg: Any, source: Any, where: str
    ) -> dict[str, torch.Tensor]:
        import torch

        expected = self.hf_tensors(cfg)
        stored: dict[str, str] = {}
        for name in source.names:
            # A bare LlamaModel checkpoint has no "model." prefix; old ones
            # carry rotary inv_freq buffers (not weights).
            canonical = (
                name
                if name.startswith(_HF_PREFIX) or name == LM_HEAD
                else _HF_PREFIX + name
            )
            if canonical.endswith("rotary_emb.inv_freq"):
                continue
            if canonical in stored:
                raise GptkitError(f"tensor {canonical} is stored twice in {where}")
            stored[canonical] = name
        if cfg.tie_embeddings:
            stored.pop(LM_HEAD, None)  # a copy of the embedding
        missing = [k for k in expected if k not in stored]
        if missing:
            hint = (
                " (config.json says tie_word_embeddings is false)"
                if missing == [LM_HEAD]
                else ""
            )
            raise GptkitError(
                f"{where} lacks tensor {missing[0]}{hint}"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                + f"; it does not match its config ({cfg.n_layers} layers,"
                f" {cfg.emb_dim} wide)"
            )
        unexpected = sorted(set(stored) - set(expected))
        if unexpected:
            raise GptkitError(
                f"{where} has tensor {stored[unexpected[0]]}, which is not part of"
                f" a {cfg.n_layers}-layer {self.name} model of its config"
            )
        for name, (_, shape) in expected.items():
            got = tuple(source.shape(stored[name]))
            if got != shape:
                raise GptkitError(
                    f"tensor {stored[name]} in {where} has shape {got}, expected"
                    f" {shape} from its config.json (contradictory shapes)"
                )
        state: dict[str, torch.Tensor] = {}
        for name, (ours, _) in expected.items():
            with source.open(stored[name]) as tensor:
                state[ours] = tensor.clone(memory_format=torch.contiguous_format)
        return state

    def state_to_hf(
        self, cfg: Any, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, (ours, _) in self.hf_tensors(cfg).items():
            out[name] = state.pop(ours).contiguous()
        state.clear()
        return out

    def tokenizer(self, directory: Path | None) -> Any:
        from gptkit.core.tokenizer import gpt2_tokenizer

        if directory is None:
            return gpt2_tokenizer()
        from gptkit.formats.hf_tokenizer import TOKENIZER_JSON, HFTokenizer

        path = Path(directory) / TOKENIZER_JSON
        if not path.is_file():
            raise SettingError(
                f"{directory} has no {TOKENIZER_JSON}: a {self.name} checkpoint"
                " brings its own tokenizer (copy it beside the weights, or name"
                " one with {tokenizer})"
            )
        return HFTokenizer(path)
