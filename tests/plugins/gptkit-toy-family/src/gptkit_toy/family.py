"""A toy family: a decoder with multi-query attention (one key/value head),
no position embeddings at all (causal attention alone orders the tokens;
Haviv et al., 2022) and a ReLU MLP. Small, but a real model: it trains,
caches keys and values, and generates with every gptkit sampler."""

from dataclasses import dataclass
from typing import ClassVar

from gptkit.core.config import ModelConfig
from gptkit.core.interfaces import Architecture
from gptkit.errors import GptkitError


@dataclass(frozen=True)
class ToyConfig(ModelConfig):
    arch: ClassVar[str] = "toy"

    vocab_size: int = 50257
    context_length: int = 64
    emb_dim: int = 64
    n_heads: int = 4
    n_layers: int = 2
    drop_rate: float = 0.0
    qkv_bias: bool = False
    tie_embeddings: bool = True

    @property
    def n_kv_heads(self) -> int:
        return 1  # multi-query attention

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def num_parameters(self) -> int:
        d, hd = self.emb_dim, self.head_dim
        block = d * d + 2 * d * hd + d * d + 8 * d * d
        return self.vocab_size * d + self.n_layers * block


class Toy(Architecture):
    name = "toy"
    summary = "A toy family: multi-query attention, no position embeddings."
    default_preset = "toy-tiny"

    def config_class(self):
        return ToyConfig

    def presets(self):
        return {"toy-tiny": ToyConfig()}

    def build(self, cfg):
        from gptkit_toy.model import ToyModel

        return ToyModel(cfg)

    def config_from_hf(self, data, where):
        raise GptkitError("the toy family has no Hugging Face format")

    config_to_hf = state_from_hf = state_to_hf = config_from_hf

    def tokenizer(self, directory):
        from gptkit.core.tokenizer import gpt2_tokenizer

        return gpt2_tokenizer()
