"""Weights saved by the book's own code (*Build a Large Language Model (From
Scratch)*, chapter 5): ``torch.save(model.state_dict(), "model.pth")`` and
``torch.save({"model_state_dict": ..., "optimizer_state_dict": ...},
"model_and_optimizer.pth")``.

The book's ``GPTModel`` uses gptkit's parameter names, plus one
``trf_blocks.N.att.mask`` buffer per block (the causal mask), which is ignored.
The files are pickles, read with ``torch.load(weights_only=True)``: a file that
would run code (or holds anything but tensors and plain containers) is refused.
The config comes from the tensor shapes; the number of attention heads cannot,
so it comes from the ``n_heads`` or ``preset`` option (``--n-heads`` /
``--preset``) or else from the GPT-2 family's width -> heads table. Tensors come
back on the CPU in the file's dtype; the caller casts and moves them.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptkit.core.config import PRESETS, GPTConfig
from gptkit.core.interfaces import LoadedWeights, WeightLoader
from gptkit.errors import GptkitError

#: Attention heads of the GPT-2 family by width (Radford et al., 2019).
GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}
_MASK = re.compile(r"^trf_blocks\.\d+\.att\.mask$")
_BLOCK = re.compile(r"^trf_blocks\.(\d+)\.")
#: Prefixes a wrapped model adds: torch.compile, DataParallel / DDP.
_WRAPPERS = ("_orig_mod.", "module.")


def default_heads(emb_dim: int) -> int:
    """Heads for a width: GPT-2's table, else one head per 64 dimensions."""
    if emb_dim in GPT2_HEADS:
        return GPT2_HEADS[emb_dim]
    heads = max(1, emb_dim // 64)
    if emb_dim % heads:
        raise GptkitError(
            f"cannot guess the attention heads of a {emb_dim}-wide model; pass"
            " --n-heads (or -o n_heads=N)"
        )
    return heads


def read_pickled_weights(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with clear errors.

    A file whose unpickling would call anything but PyTorch's tensor
    constructors is refused before anything in it runs.
    """
    if not str(path).strip() or str(path) == ".":
        raise GptkitError("book: needs a path to a .pth file")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not found"
        raise GptkitError(f"book weights {path}: {kind} (expected a .pth file)")
    from gptkit.core.checkpoints.native import require_safe_torch_load

    require_safe_torch_load()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notices
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = f" (it calls {culprit.group(1)})" if culprit else ""
        raise GptkitError(
            f"refusing to load {path}: it is not a plain tensor file{why}; gptkit"
            " reads .pth files with torch.load(weights_only=True), which cannot"
            " run code"
        ) from None
    except Exception as exc:  # a damaged zip or pickle fails in many ways
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise GptkitError(
            f"corrupt or unreadable {path}: {type(exc).__name__}: {first}"
        ) from None


def _unwrap(state: dict[str, Any]) -> dict[str, Any]:
    for prefix in _WRAPPERS:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def split_book_file(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """(model state dict without the mask buffers, optimizer state or None)."""
    optimizer = None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        optimizer = obj.get("optimizer_state_dict")
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise GptkitError(f"{path} holds no state dict of the book's GPTModel")
    state = _unwrap({str(k): v for k, v in obj.items()})
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise GptkitError(f"{path}: entry {bad[0]} is not a tensor")
    if "tok_emb.weight" not in state or "pos_emb.weight" not in state:
        raise GptkitError(
            f"{path} is not a state dict of the book's GPTModel (it has no"
            " tok_emb.weight / pos_emb.weight)"
        )
    return {k: v for k, v in state.items() if not _MASK.match(k)}, optimizer


class BookLoader(WeightLoader):
    """Loads ``book:PATH.pth`` (or a bare ``*.pth`` / ``*.pt`` file path)."""

    name = "book"
    summary = (
        "State-dict .pth files saved by the book's code (model.pth,"
        " model_and_optimizer.pth)."
    )

    @dataclass(frozen=True)
    class Options:
        """Settings the shapes do not tell (``--n-heads``, ``--preset``)."""

        n_heads: int | None = field(
            default=None,
            metadata={
                "help": "attention heads [default: GPT-2's for the width, else"
                " width / 64]",
                "ge": 1,
            },
        )
        preset: str | None = field(
            default=None,
            metadata={
                "help": "take n_heads from this preset (its width and depth must"
                " match the file)",
                "choices": tuple(PRESETS),
            },
        )

    @classmethod
    def accepts(cls, location: str) -> bool:
        path = Path(location).expanduser()
        return path.suffix in (".pth", ".pt") and path.is_file()

    def load(self, location: str) -> LoadedWeights:
        from gptkit.core.weights import check_state_dict

        path = Path(location).expanduser()
        state, optimizer = split_book_file(read_pickled_weights(path), path)
        cfg = self.infer_config(state)
        head = state.get("out_head.weight")
        if head is not None and _same_storage(head, state["tok_emb.weight"]):
            state["out_head.weight"] = head.clone()  # stays untied when trained
        check_state_dict(cfg, state)
        extra: dict[str, Any] = {}
        if optimizer is not None:
            extra["optimizer_state"] = optimizer
        return LoadedWeights(cfg, state, source=f"book:{path}", extra=extra)

    def infer_config(self, state: dict[str, torch.Tensor]) -> GPTConfig:
        """The config the tensor shapes imply, heads from the options."""
        vocab, emb_dim = _shape2(state, "tok_emb.weight")
        context, pos_dim = _shape2(state, "pos_emb.weight")
        if pos_dim != emb_dim:
            raise GptkitError(
                f"pos_emb.weight is {pos_dim} wide but tok_emb.weight {emb_dim}"
            )
        layers = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
        n_layers = max(layers) + 1 if layers else 0
        if n_layers == 0:
            raise GptkitError("the state dict has no transformer blocks (trf_blocks.N)")
        return GPTConfig(
            vocab_size=vocab,
            context_length=context,
            emb_dim=emb_dim,
            n_heads=self._heads(emb_dim, n_layers),
            n_layers=n_layers,
            qkv_bias="trf_blocks.0.att.W_query.bias" in state,
            tie_embeddings=False,  # the book's out_head is its own parameter
        )

    def _heads(self, emb_dim: int, n_layers: int) -> int:
        opts = self.options
        if opts.n_heads is not None:
            heads = opts.n_heads
        elif opts.preset is not None:
            preset = PRESETS[opts.preset]
            if (preset.emb_dim, preset.n_layers) != (emb_dim, n_layers):
                raise GptkitError(
                    f"--preset {opts.preset} is {preset.n_layers} layers x"
                    f" {preset.emb_dim} wide, but the weights are {n_layers} x"
                    f" {emb_dim}; pass --n-heads instead"
                )
            heads = preset.n_heads
        else:
            heads = default_heads(emb_dim)
        if emb_dim % heads:
            raise GptkitError(
                f"n_heads {heads} does not divide the weights' width {emb_dim}"
            )
        return heads


def _shape2(state: dict[str, torch.Tensor], key: str) -> tuple[int, int]:
    tensor = state[key]
    if tensor.dim() != 2:
        raise GptkitError(f"tensor {key} has shape {tuple(tensor.shape)}; expected 2-D")
    return int(tensor.shape[0]), int(tensor.shape[1])


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
