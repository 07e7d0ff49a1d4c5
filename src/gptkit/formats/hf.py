"""GPT-2 in Hugging Face ``transformers`` format <-> gptkit: config and tensors.

``transformers``' GPT-2 stores the linear layers of a block as ``Conv1D``
modules whose weight is ``(in_features, out_features)`` (the transpose of
``nn.Linear``), and the query/key/value projections as one ``c_attn`` layer whose
output is ``[query | key | value]``. Two key layouts exist: ``GPT2Model`` keys
(``wte.weight``, ``h.0.attn.c_attn.weight``, ...; OpenAI's checkpoints on the Hub,
which also carry ``h.N.attn.bias`` causal-mask buffers) and the
``transformer.``-prefixed keys that ``GPT2LMHeadModel.save_pretrained`` writes,
plus ``lm_head.weight`` when the head is not tied. Both are read here.

Torch-free at import time: ``gptkit download`` checks a config with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptkit.core.config import GPTConfig
from gptkit.errors import GptkitError

if TYPE_CHECKING:
    import torch

PREFIX = "transformer."
LM_HEAD = "lm_head.weight"
#: The tanh approximation of GELU, the only activation GPTModel implements.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")
#: Buffers of older ``transformers`` versions: causal masks, not weights.
_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_BLOCK_KEY = re.compile(r"^h\.(\d+)\.(.+)$")

# Per-block tensors: HF suffix -> (gptkit suffix(es), how to convert).
#   copy: same layout; linear: Conv1D (in, out) -> Linear (out, in);
#   qkv: c_attn split into the query, key and value projections.
_BLOCK: dict[str, tuple[tuple[str, ...], str]] = {
    "ln_1.weight": (("norm1.scale",), "copy"),
    "ln_1.bias": (("norm1.shift",), "copy"),
    "attn.c_attn.weight": (
        ("att.W_query.weight", "att.W_key.weight", "att.W_value.weight"),
        "qkv",
    ),
    "attn.c_attn.bias": (
        ("att.W_query.bias", "att.W_key.bias", "att.W_value.bias"),
        "qkv",
    ),
    "attn.c_proj.weight": (("att.out_proj.weight",), "linear"),
    "attn.c_proj.bias": (("att.out_proj.bias",), "copy"),
    "ln_2.weight": (("norm2.scale",), "copy"),
    "ln_2.bias": (("norm2.shift",), "copy"),
    "mlp.c_fc.weight": (("ff.layers.0.weight",), "linear"),
    "mlp.c_fc.bias": (("ff.layers.0.bias",), "copy"),
    "mlp.c_proj.weight": (("ff.layers.2.weight",), "linear"),
    "mlp.c_proj.bias": (("ff.layers.2.bias",), "copy"),
}
_TOP: dict[str, str] = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.scale",
    "ln_f.bias": "final_norm.shift",
}


# -- config -------------------------------------------------------------------


def _positive_int(data: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GptkitError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def config_from_hf(data: Any, where: str = "config.json") -> GPTConfig:
    """The GPTConfig of a ``transformers`` GPT-2 ``config.json`` (parsed).

    Missing fields take ``transformers.GPT2Config``'s defaults. A model of
    another architecture, or a GPT-2 variant GPTModel does not implement (another
    activation, a wider MLP, cross-attention, ...), is a :class:`GptkitError`.
    """
    if not isinstance(data, dict):
        raise GptkitError(f"{where} is not a JSON object")
    model_type = data.get("model_type")
    architectures = data.get("architectures") or []
    if model_type != "gpt2" and not (
        model_type is None and any(str(a).startswith("GPT2") for a in architectures)
    ):
        kind = model_type or ", ".join(map(str, architectures)) or "unknown"
        raise GptkitError(
            f"{where} describes a {kind!r} model; gptkit loads the GPT-2"
            " architecture (model_type 'gpt2') only"
        )
    d = _positive_int(data, "n_embd", 768, where)
    unsupported = []
    activation = data.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        unsupported.append(f"activation_function {activation!r}")
    if data.get("n_inner") not in (None, 4 * d):
        unsupported.append(f"n_inner {data['n_inner']} (GPTModel uses 4 * n_embd)")
    if data.get("add_cross_attention"):
        unsupported.append("cross-attention")
    if data.get("scale_attn_by_inverse_layer_idx"):
        unsupported.append("scale_attn_by_inverse_layer_idx")
    if data.get("scale_attn_weights", True) is False:
        unsupported.append("unscaled attention (scale_attn_weights false)")
    if unsupported:
        raise GptkitError(
            f"{where}: this GPT-2 variant uses {', '.join(unsupported)}, which"
            " gptkit's GPTModel does not implement"
        )
    eps = data.get("layer_norm_epsilon", 1e-5)
    drop = data.get("resid_pdrop", 0.1)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
        raise GptkitError(f"{where}: layer_norm_epsilon must be > 0, got {eps!r}")
    if not isinstance(drop, (int, float)) or isinstance(drop, bool):
        raise GptkitError(f"{where}: resid_pdrop must be a number, got {drop!r}")
    return GPTConfig(
        vocab_size=_positive_int(data, "vocab_size", 50257, where),
        context_length=_positive_int(data, "n_positions", 1024, where),
        emb_dim=d,
        n_heads=_positive_int(data, "n_head", 12, where),
        n_layers=_positive_int(data, "n_layer", 12, where),
        drop_rate=float(drop),
        qkv_bias=True,  # c_attn always has a bias
        tie_embeddings=bool(data.get("tie_word_embeddings", True)),
        layer_norm_eps=float(eps),
    )


def config_to_hf(cfg: GPTConfig, dtype: str = "float32") -> dict[str, Any]:
    """A ``transformers`` GPT-2 ``config.json`` for a gptkit model config."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": 50256 if cfg.vocab_size > 50256 else None,
        "eos_token_id": 50256 if cfg.vocab_size > 50256 else None,
        "torch_dtype": dtype,
        "use_cache": True,
    }


# -- tensors ------------------------------------------------------------------


def hf_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 checkpoint for ``cfg`` holds (``GPT2Model`` names,
    plus ``lm_head.weight`` when the head is not tied) and its shape."""
    d, v = cfg.emb_dim, cfg.vocab_size
    block = {
        "ln_1.weight": (d,),
        "ln_1.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d),
        "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d),
        "attn.c_proj.bias": (d,),
        "ln_2.weight": (d,),
        "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, 4 * d),
        "mlp.c_fc.bias": (4 * d,),
        "mlp.c_proj.weight": (4 * d, d),
        "mlp.c_proj.bias": (d,),
    }
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (v, d),
        "wpe.weight": (cfg.context_length, d),
    }
    for i in range(cfg.n_layers):
        shapes.update({f"h.{i}.{k}": s for k, s in block.items()})
    shapes["ln_f.weight"] = (d,)
    shapes["ln_f.bias"] = (d,)
    if not cfg.tie_embeddings:
        shapes[LM_HEAD] = (v, d)
    return shapes


@dataclass
class TensorSource:
    """Read access to a checkpoint's tensors by their stored names: ``names``,
    ``shape(name)`` without reading the data, and ``open(name)``, a context
    manager yielding the tensor (possibly a view into a mapped file, valid inside
    the ``with`` block only)."""

    names: Iterable[str]
    shape: Callable[[str], tuple[int, ...]]
    open: Callable[[str], AbstractContextManager[torch.Tensor]]

    @classmethod
    def from_dict(cls, tensors: Mapping[str, torch.Tensor]) -> TensorSource:
        """A source over tensors in memory."""
        return cls(
            list(tensors),
            lambda name: tuple(tensors[name].shape),
            lambda name: nullcontext(tensors[name]),
        )


def canonical_names(names: Iterable[str]) -> dict[str, str]:
    """``GPT2Model`` name -> stored name, for either layout; buffers dropped."""
    found: dict[str, str] = {}
    for stored in names:
        name = stored[len(PREFIX) :] if stored.startswith(PREFIX) else stored
        if _BUFFER.match(name):
            continue
        if name in found:
            raise GptkitError(
                f"tensor {name} is stored twice ({found[name]}, {stored})"
            )
        found[name] = stored
    return found


def check_hf_tensors(
    cfg: GPTConfig, source: TensorSource, where: str = "model.safetensors"
) -> dict[str, str]:
    """Check that the stored tensors are exactly GPT-2's for ``cfg``, each with
    its expected shape; return ``GPT2Model`` name -> stored name.

    A tied model's ``lm_head.weight`` (a copy of ``wte.weight``) is accepted and
    ignored. Errors name the tensor.
    """
    names = canonical_names(source.names)
    expected = hf_shapes(cfg)
    if cfg.tie_embeddings:
        names.pop(LM_HEAD, None)
    missing = [k for k in expected if k not in names]
    if missing:
        hint = ""
        if missing == [LM_HEAD]:
            hint = " (config.json says tie_word_embeddings is false)"
        raise GptkitError(
            f"{where} lacks tensor {missing[0]}{hint}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + f"; it does not match its config ({cfg.n_layers} layers,"
            f" {cfg.emb_dim} wide)"
        )
    unexpected = sorted(set(names) - set(expected))
    if unexpected:
        raise GptkitError(
            f"{where} has tensor {names[unexpected[0]]}, which is not part of a"
            f" {cfg.n_layers}-layer GPT-2"
        )
    for name, shape in expected.items():
        got = tuple(source.shape(names[name]))
        if got != shape:
            raise GptkitError(
                f"tensor {names[name]} in {where} has shape {got}, expected {shape}"
                " from its config.json"
            )
    return names


def _convert_from_hf(name: str, tensor: torch.Tensor) -> list[torch.Tensor]:
    """One HF tensor -> its gptkit tensor(s), each a fresh contiguous copy."""
    import torch

    fresh = torch.contiguous_format
    match = _BLOCK_KEY.match(name)
    how = _BLOCK[match.group(2)][1] if match else "copy"
    if how == "linear":
        return [tensor.t().clone(memory_format=fresh)]  # (in, out) -> (out, in)
    if how == "qkv" and tensor.dim() == 1:
        return [part.clone(memory_format=fresh) for part in tensor.chunk(3)]
    if how == "qkv":
        # (D, 3D) -> 3 x (D, D) in Conv1D layout (in, out) -> 3 x Linear (out, in)
        return [p.t().clone(memory_format=fresh) for p in tensor.chunk(3, dim=1)]
    return [tensor.clone(memory_format=fresh)]


def _gptkit_names(name: str) -> tuple[str, ...]:
    if name == LM_HEAD:
        return ("out_head.weight",)
    if name in _TOP:
        return (_TOP[name],)
    match = _BLOCK_KEY.match(name)
    assert match is not None, name
    layer, suffix = match.groups()
    return tuple(f"trf_blocks.{layer}.{k}" for k in _BLOCK[suffix][0])


def state_from_hf(
    cfg: GPTConfig, source: TensorSource, where: str = "model.safetensors"
) -> dict[str, torch.Tensor]:
    """A gptkit state dict (book names) from a GPT-2 checkpoint in either key
    layout, checked first (:func:`check_hf_tensors`). Tensors are read one at a
    time and converted into fresh tensors, so at most one extra tensor is alive
    at a time; the dtype is the file's."""
    names = check_hf_tensors(cfg, source, where)
    state: dict[str, torch.Tensor] = {}
    for name in hf_shapes(cfg):
        with source.open(names[name]) as tensor:
            converted = _convert_from_hf(name, tensor)
        state.update(zip(_gptkit_names(name), converted, strict=True))
    return state


def state_to_hf(
    cfg: GPTConfig, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``GPT2LMHeadModel`` tensors (``transformer.``-prefixed, ``lm_head.weight``
    when untied) from a checked gptkit state dict, which this empties as it goes
    so the weights are not held twice. A model without query/key/value biases
    gets zero biases (the same function)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name in hf_shapes(cfg):
        keys = _gptkit_names(name)
        match = _BLOCK_KEY.match(name)
        how = _BLOCK[match.group(2)][1] if match else "copy"
        target = name if name == LM_HEAD else PREFIX + name
        if how == "qkv" and name.endswith(".bias") and not cfg.qkv_bias:
            weight = out[target.replace(".bias", ".weight")]
            out[target] = weight.new_zeros(3 * cfg.emb_dim)
        elif how == "qkv" and name.endswith(".bias"):
            out[target] = torch.cat([state.pop(k) for k in keys])  # 3 x (D,) -> (3D,)
        elif how == "qkv":
            # 3 x Linear (D, D) as (out, in) -> transposed to (in, out) -> (D, 3D)
            out[target] = torch.cat([state.pop(k).t() for k in keys], dim=1)
        elif how == "linear":
            out[target] = state.pop(keys[0]).t().contiguous()  # (out, in) -> (in, out)
        else:
            out[target] = state.pop(keys[0]).contiguous()
    state.clear()
    return out
