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
        device = self.weight.device
        self.lora_A = nn.Parameter(torch.empty(self.in_features, r, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(r, self.out_features, device=device))
        self.alpha = alpha
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        base = F.linear(x, self.weight, self.bias)
        # (..., in) @ (in, r) @ (r, out) -> (..., out)
        update = self.dropout(x) @ self.lora_A.to(x.dtype) @ self.lora_B.to(x.dtype)
        return base + self.alpha * update

    def delta_weight(self) -> Tensor:
        """The update as an (out, in) matrix: ``alpha * (A B)^T``."""
        return self.alpha * (self.lora_A @ self.lora_B).T

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.lora_A.shape[1]}, alpha={self.alpha}"


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
        return LoRALinear(linear, o.r, o.alpha, o.dropout)  # type: ignore[arg-type]

    def trainable_parameters(self, in_features: int, out_features: int) -> int:
        return self.options.r * (in_features + out_features)

    def targets(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.options.targets.split("+") if t.strip())
