"""``gptkit eval``: training and validation loss and perplexity of weights."""

from __future__ import annotations

from typing import Any

import click

from gptkit.cli.flags import (
    corpus_option,
    data_options,
    device_option,
    echo_json,
    model_config,
    model_options,
    weight_hints,
)


@click.command("eval")
@click.option(
    "--weights",
    metavar="SPEC",
    help="Weights to evaluate (RUN_DIR, hf:gpt2, book:model.pth, ...);"
    " default: a fresh random init from --seed.",
)
@model_options("gpt2-124m")
@corpus_option("python-docs")
@data_options(batch_size=2)
@click.option(
    "--eval-iter",
    type=click.IntRange(min=1),
    help="Only the first N batches of each split [default: all].",
)
@click.option("--seed", type=int, default=123, show_default=True)
@device_option
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Precision of the weights and activations (the loss is computed in fp32).",
)
@click.option("--json", "json_", is_flag=True, help="Print one JSON object.")
def evaluate(**opts: Any) -> None:
    """Training and validation loss and perplexity on a corpus.

    The text is split at --train-ratio (by characters), tokenized and cut into
    windows of --context-length tokens every --stride tokens, as in the book's
    chapter 5; the losses are means over the batches of each split.

    \b
    Examples:
      gptkit eval --preset gpt2-124m --context-length 256 \\
          --corpus the-verdict --seed 123 --json   # the book's 10.98758 / 10.98110
      gptkit eval --weights runs/20261128-101500 --corpus notes.txt
      gptkit eval --weights hf:gpt2 --corpus the-verdict \\
          --context-length 256                       # exercise 5.5: 3.7547 / 3.5596
      gptkit eval --weights book:model.pth --n-heads 16 --corpus the-verdict
    """
    import torch

    from gptkit.core.data import load_text, make_loaders
    from gptkit.core.device import resolve_device, resolve_dtype
    from gptkit.core.loss import loader_loss, perplexity
    from gptkit.core.weights import build_model, load_weights

    device = resolve_device(opts["device"])
    dtype = resolve_dtype(opts["dtype"])
    if opts["weights"]:
        loaded = load_weights(opts["weights"], weight_hints(opts))
        cfg = loaded.config
        state = loaded.state_dict
        context = opts["context_length"] or cfg.context_length
        if context > cfg.context_length:
            raise click.BadParameter(
                f"{context} exceeds the model's context length {cfg.context_length}",
                param_hint="--context-length",
            )
    else:
        cfg = model_config(opts["preset"], opts)
        state = None
        context = cfg.context_length
    text = load_text(opts["corpora"])
    data = make_loaders(
        text,
        context_length=context,
        batch_size=opts["batch_size"],
        stride=opts["stride"],
        train_ratio=opts["train_ratio"],
        seed=opts["seed"],
    )
    torch.manual_seed(opts["seed"])
    model = build_model(cfg, state, device=device, dtype=dtype, consume=True).eval()
    n = opts["eval_iter"]
    train_loss = loader_loss(data.train_eval_loader, model, device, n)
    val_loss = loader_loss(data.val_loader, model, device, n)
    result = {
        "weights": opts["weights"]
        or f"random init ({opts['preset']}, seed {opts['seed']})",
        "corpus": list(opts["corpora"]),
        "context_length": context,
        "train_tokens": data.train_tokens,
        "val_tokens": data.val_tokens,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "train_perplexity": perplexity(train_loss),
        "val_perplexity": perplexity(val_loss),
    }
    if opts["json_"]:
        echo_json(result)
        return
    rows = [
        ("weights", result["weights"]),
        ("tokens", f"{data.train_tokens:,} training, {data.val_tokens:,} validation"),
        (
            "training loss",
            f"{train_loss:.5f} (perplexity {perplexity(train_loss):,.1f})",
        ),
        ("validation loss", f"{val_loss:.5f} (perplexity {perplexity(val_loss):,.1f})"),
    ]
    for label, value in rows:
        click.echo(f"{label + ':':<17} {value}")
