"""LoRA: low-rank adaptation (Hu et al., 2021, "LoRA: Low-Rank Adaptation of
Large Language Models"), as the book's appendix E writes it.

A frozen linear layer ``W x + b`` gains ``alpha * dropout(x) A B`` with ``A``
of shape (in, r), initialised like a linear layer's weight (Kaiming uniform,
``a = sqrt(5)``), and ``B`` of shape (r, out), initialised to zero, so the
adapted model starts as the base model. The scale is the book's ``alpha``
(Hu et al. and PEFT scale by ``alpha / r``: give ``alpha=alpha_peft/r`` for
their update).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptkit.core.interfaces import Adapter


def _add_low_rank(
    layer: nn.Module, r: int, alpha: float, dropout: float, device: torch.device
) -> None:
    layer.lora_A = nn.Parameter(torch.empty(layer.in_features, r, device=device))
    nn.init.kaiming_uniform_(layer.lora_A, a=math.sqrt(5))
    layer.lora_B = nn.Parameter(torch.zeros(r, layer.out_features, device=device))
    layer.alpha = alpha
    layer.dropout = nn.Dropout(dropout)


def _add_update(layer: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``y + alpha * dropout(x) A B``, added to ``y`` in place (the product's
    backward does not need its output) and scaled on the rank-r side: for a
    vocabulary-wide head, no logits-sized temporaries beyond the update."""
    # (..., in) @ (in, r) -> (..., r) @ (r, out) -> (..., out)
    a, b = layer.lora_A.to(x.dtype), layer.lora_B.to(x.dtype)
    low = (layer.dropout(x) @ a) * layer.alpha
    return y.add_(low @ b.to(y.dtype))


def _delta(layer: nn.Module) -> Tensor:
    """The update as an (out, in) matrix: ``alpha * (A B)^T``."""
    return layer.alpha * (layer.lora_A @ layer.lora_B).T


class LoRALinear(nn.Linear):
    """``nn.Linear`` (frozen ``weight`` and ``bias``, same names) plus the
    trainable ``lora_A`` (in, r) and ``lora_B`` (r, out)."""

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        _add_low_rank(self, r, alpha, dropout, self.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        return _add_update(self, x, F.linear(x, self.weight, self.bias))

    def delta_weight(self) -> Tensor:
        """The update as an (out, in) matrix: ``alpha * (A B)^T``."""
        return _delta(self)

    def frozen_weight(self) -> Tensor:
        """The base's weight (out, in) in float."""
        return self.weight

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.lora_A.shape[1]}, alpha={self.alpha}"


class QLoRALinear(nn.Module):
    """LoRA over a frozen quantized layer (QLoRA, Dettmers et al. 2023): the
    integer layer stays as it is (``base``, its buffers), the adapters
    ``lora_A``/``lora_B`` are float and trained. The gradient reaches the
    layer's input through the base's dequantized weight, recomputed in the
    backward pass (:mod:`gptkit.plugins.quantizers.linear`)."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float):
        super().__init__()
        self.in_features = int(base.in_features)  # type: ignore[arg-type]
        self.out_features = int(base.out_features)  # type: ignore[arg-type]
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        device = next(iter(base.buffers())).device
        _add_low_rank(self, r, alpha, dropout, device)

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        return _add_update(self, x, self.base(x))

    def delta_weight(self) -> Tensor:
        """The update as an (out, in) matrix: ``alpha * (A B)^T``."""
        return _delta(self)

    def frozen_weight(self) -> Tensor:
        """The base's weight (out, in), dequantized to float32."""
        return self.base.dequantized_weight(torch.float32)  # type: ignore[operator]

    def extra_repr(self) -> str:
        return f"r={self.lora_A.shape[1]}, alpha={self.alpha}"


class LoRA(Adapter):
    """LoRA on the chosen linear layers (default: every one, the book's
    ``replace_linear_with_lora``)."""

    name = "lora"
    summary = "Low-rank adapters (Hu et al. 2021; the book's appendix E)."

    @dataclass(frozen=True)
    class Options:
        r: int = field(default=16, metadata={"help": "rank", "ge": 1})
        alpha: float = field(default=16.0, metadata={"help": "scale of the update"})
        dropout: float = field(
            default=0.0,
            metadata={"help": "dropout on the adapter's input", "ge": 0.0, "lt": 1.0},
        )
        targets: str = field(
            default="",
            metadata={
                "help": "layers to adapt, joined by '+' (W_query+W_value);"
                " default every linear layer"
            },
        )

    def adapt_linear(self, linear: nn.Module, name: str) -> nn.Module:
        o = self.options
        if isinstance(linear, nn.Linear):
            return LoRALinear(linear, o.r, o.alpha, o.dropout)
        if not hasattr(linear, "dequantized_weight"):
            raise TypeError(f"{name}: LoRA adapts linear or quantized layers only")
        return QLoRALinear(linear, o.r, o.alpha, o.dropout)

    def trainable_parameters(self, in_features: int, out_features: int) -> int:
        return self.options.r * (in_features + out_features)

    def targets(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.options.targets.split("+") if t.strip())
