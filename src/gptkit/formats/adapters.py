"""Adapters on a model's linear layers (LoRA and what plugins add): choose the
layers, freeze the base, save only the adapters, merge them back.

A run finetuned with an adapter saves checkpoints holding only the adapter's
tensors plus a record of the adapter and of its base weights (the spec the run
started from); loading such a checkpoint (``--weights RUN``, ``gptkit
export``) loads the base, applies the adapter and merges its update into the
weights, so the result is an ordinary model.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptkit.errors import GptkitError, SettingError

if TYPE_CHECKING:
    import torch

    from gptkit.core.config import GPTConfig
    from gptkit.core.interfaces import Adapter

#: The linear layers of a GPT block, by their name inside the block.
BLOCK_LINEARS = (
    "att.W_query",
    "att.W_key",
    "att.W_value",
    "att.out_proj",
    "ff.layers.0",
    "ff.layers.2",
)


def get_adapter(spec: str) -> Adapter:
    """``r=16,alpha=16`` (LoRA) or ``NAME:KEY=VALUE,...`` (another adapter
    plugin), with validated options."""
    from gptkit.core.options import parse_pairs
    from gptkit.core.registry import get_registry

    head, sep, rest = spec.partition(":")
    if sep and "=" not in head:
        name, pairs = head.strip(), rest
    else:
        name, pairs = "lora", spec
    try:
        options = parse_pairs(p for p in pairs.split(",") if p.strip())
    except GptkitError as exc:
        raise SettingError(f"{{lora}} {spec}: {exc}") from None
    try:
        return get_registry().adapters.create(name, options)
    except GptkitError as exc:
        raise SettingError(f"{{lora}} {spec}: {exc}") from None


def linear_shapes(cfg: GPTConfig) -> dict[str, tuple[int, int]]:
    """Every linear layer of the model: name -> (in, out) features."""
    d = cfg.emb_dim
    shape = {
        "att.W_query": (d, d),
        "att.W_key": (d, d),
        "att.W_value": (d, d),
        "att.out_proj": (d, d),
        "ff.layers.0": (d, 4 * d),
        "ff.layers.2": (4 * d, d),
    }
    out = {
        f"trf_blocks.{i}.{name}": shape[name]
        for i in range(cfg.n_layers)
        for name in BLOCK_LINEARS
    }
    out["out_head"] = (d, cfg.vocab_size)
    return out


def targeted_layers(cfg: GPTConfig, adapter: Adapter) -> list[str]:
    """The layers ``adapter`` adapts: its targets (a layer name or the end of
    one: ``W_query``, ``att.out_proj``, ``out_head``), else every linear layer
    (but a head tied to the token embedding, which is not a layer of its own)."""
    names = list(linear_shapes(cfg))
    targets = adapter.targets()
    tied = cfg.tie_embeddings
    if not targets:
        return [n for n in names if not (tied and n == "out_head")]
    chosen: list[str] = []
    for target in targets:
        found = [n for n in names if n == target or n.endswith("." + target)]
        if not found:
            valid = ", ".join(
                [*(n.split(".", 1)[1] for n in BLOCK_LINEARS), "out_head"]
            )
            raise SettingError(
                f"{{lora}} targets: no linear layer is called {target!r}; the"
                f" layers are {valid} (or a full name, trf_blocks.0.att.W_query)"
            )
        if tied and "out_head" in found:
            raise SettingError(
                "{lora} targets: out_head is tied to the token embedding in this"
                " model; adapt the other layers"
            )
        chosen.extend(n for n in found if n not in chosen)
    return chosen


def trainable_count(cfg: GPTConfig, adapter: Adapter) -> int:
    """Parameters the adapter trains (before the model exists)."""
    shapes = linear_shapes(cfg)
    return sum(
        adapter.trainable_parameters(*shapes[name])
        for name in targeted_layers(cfg, adapter)
    )


def apply_adapter(model: torch.nn.Module, adapter: Adapter) -> int:
    """Freeze ``model`` and put the adapter on its targeted linear layers;
    return the number of trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name in targeted_layers(model.cfg, adapter):  # type: ignore[arg-type]
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, adapter.adapt_linear(getattr(parent, child), name))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def is_adapted(model: torch.nn.Module) -> bool:
    return any(hasattr(m, "delta_weight") for m in model.modules())


def adapter_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What an adapted model's checkpoint stores: its trainable parameters."""
    return {
        name: p.detach().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def check_adapter_tensors(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor]
) -> None:
    """The checkpoint's adapter tensors are the model's, with their shapes."""
    expected = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise GptkitError(f"the checkpoint's adapter does not fit the model ({what})")
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise GptkitError(
                f"adapter tensor {name} has shape {tuple(tensors[name].shape)},"
                f" expected {tuple(shape)}"
            )


def merge_adapter(model: torch.nn.Module) -> None:
    """Replace every adapted layer by a plain ``nn.Linear`` whose weight has
    the adapter's update added (the model computes the same function); a
    QLoRA base is dequantized first, its layers without an adapter too."""
    import torch

    for name, module in list(model.named_modules()):
        if not hasattr(module, "delta_weight"):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        with torch.no_grad():
            base = _frozen_weight(module)
            weight = base + module.delta_weight().to(base.dtype)
        setattr(parent, child, _plain_linear(module, weight))
    dequantize_layers(model)
    for p in model.parameters():
        p.requires_grad_(True)


def _frozen_weight(module: torch.nn.Module) -> torch.Tensor:
    frozen = getattr(module, "frozen_weight", None)
    return frozen() if frozen is not None else module.weight  # type: ignore[return-value]


def _plain_linear(module: torch.nn.Module, weight: torch.Tensor) -> torch.nn.Module:
    import torch

    bias = module.bias
    plain = torch.nn.Linear(
        module.in_features,  # type: ignore[arg-type]
        module.out_features,  # type: ignore[arg-type]
        bias=bias is not None,
        device="meta",
    )
    plain.weight = torch.nn.Parameter(weight.detach())
    if bias is not None:
        plain.bias = torch.nn.Parameter(bias.detach().to(weight.dtype).clone())  # type: ignore[union-attr]
    return plain


def quantize_base(model: torch.nn.Module, spec: str) -> None:
    """QLoRA's frozen base: every linear layer of ``model`` quantized with the
    quantizer ``spec`` names (``int8``, ``int4:group_size=32``), except a head
    tied to the token embedding (it stays the embedding, as in the merged
    model)."""
    import torch

    from gptkit.core.quantize import get_quantizer

    quantizer = get_quantizer(spec)
    tied = getattr(model.cfg, "tie_embeddings", False)
    linears = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not (tied and n == "out_head")
    ]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = quantizer.quantize_linear(linear, name)
        for buf in layer.buffers():
            buf.requires_grad_(False)
        setattr(parent, child, layer)


def dequantize_layers(model: torch.nn.Module) -> None:
    """Replace every quantized layer left (QLoRA's base layers without an
    adapter) by an ``nn.Linear`` holding its dequantized float weight."""
    for name, module in list(model.named_modules()):
        dequantized = getattr(module, "dequantized_weight", None)
        if dequantized is None or hasattr(module, "delta_weight"):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _plain_linear(module, dequantized()))


def adapter_record(
    adapter: Adapter, base: str, trainable: int, quantize: str | None = None
) -> dict[str, Any]:
    """What config.json and every checkpoint record of the adapter (and, for
    QLoRA, the quantizer of its frozen base: ``--weights RUN`` quantizes the
    base again the same way, deterministically, before merging)."""
    record = {
        "name": adapter.name,
        "options": asdict(adapter.options),
        "base": base,
        "trainable_parameters": trainable,
    }
    if quantize is not None:
        record["quantize"] = quantize
    return record


def base_spec(spec: str) -> str:
    """A weight spec that still names the same weights from another working
    directory (relative paths made absolute)."""
    from gptkit.core.weights import split_spec

    prefix, location = split_spec(spec)
    path = Path(location).expanduser()
    if location and path.exists():
        location = str(path.resolve())
    return f"{prefix}:{location}" if prefix else location


def merged_state(
    cfg: GPTConfig, tensors: dict[str, torch.Tensor], record: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The weights of an adapter checkpoint merged into its base: the base
    loaded from the recorded spec, the adapter applied and loaded, merged."""
    import torch

    from gptkit.core.registry import get_registry
    from gptkit.core.weights import build_model, load_weights

    base = record.get("base")
    if not base:
        raise GptkitError("the adapter checkpoint records no base weights")
    try:
        loaded = load_weights(base, {"n_heads": cfg.n_heads})
    except GptkitError as exc:
        raise GptkitError(
            f"cannot load the adapter's base weights {base}: {exc}"
        ) from None
    state = dict(loaded.state_dict)
    pos = state.get("pos_emb.weight")
    if pos is not None and pos.shape[0] > cfg.context_length:  # a shorter context
        state["pos_emb.weight"] = pos[: cfg.context_length].clone()
    model = build_model(cfg, state, dtype=torch.float32)
    if record.get("quantize"):  # QLoRA: the base the adapters were trained on
        quantize_base(model, record["quantize"])
    adapter = get_registry().adapters.create(record["name"], record.get("options"))
    apply_adapter(model, adapter)
    check_adapter_tensors(model, tensors)
    model.load_state_dict(tensors, strict=False)
    merge_adapter(model)
    out = {k: v.detach() for k, v in model.state_dict().items()}
    return cfg.without_tied(out)
