"""GPT-2 (Radford et al., 2019; the book's chapters 4 and 5): the first
architecture component. Its model, config and Hugging Face mapping are the
core's own (:mod:`gptkit.core.model`, :mod:`gptkit.core.config`,
:mod:`gptkit.formats.hf`); this component only names them, so every number
GPT-2 gave before families existed stays as it was."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gptkit.core.interfaces import Architecture

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig


class GPT2(Architecture):
    """GPT-2: learned positions, LayerNorm, GELU MLP, multi-head attention;
    GPT-2's byte-pair encoding through tiktoken."""

    name = "gpt2"
    summary = "GPT-2 (the book's model): presets gpt2-124m ... gpt2-1558m, tiny, mini."
    hf_model_types: ClassVar[tuple[str, ...]] = ("gpt2",)
    default_preset: ClassVar[str] = "mini"

    def config_class(self) -> type:
        from gptkit.core.config import GPTConfig

        return GPTConfig

    def presets(self) -> dict[str, Any]:
        from gptkit.core.config import PRESETS

        return dict(PRESETS)

    def build(self, cfg: GPTConfig) -> torch.nn.Module:
        from gptkit.core.model import GPTModel

        return GPTModel(cfg)

    def config_from_hf(self, data: dict[str, Any], where: str) -> GPTConfig:
        from gptkit.formats.hf import config_from_hf

        return config_from_hf(data, where)

    def config_to_hf(self, cfg: GPTConfig, dtype: str = "float32") -> dict[str, Any]:
        from gptkit.formats.hf import config_to_hf

        return config_to_hf(cfg, dtype)

    def state_from_hf(
        self, cfg: GPTConfig, source: Any, where: str
    ) -> dict[str, torch.Tensor]:
        from gptkit.formats.hf import state_from_hf

        return state_from_hf(cfg, source, where)

    def state_to_hf(
        self, cfg: GPTConfig, state: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        from gptkit.formats.hf import state_to_hf

        return state_to_hf(cfg, state)

    def tokenizer(self, directory: Path | None) -> Any:
        from gptkit.core.tokenizer import gpt2_tokenizer

        return gpt2_tokenizer()
