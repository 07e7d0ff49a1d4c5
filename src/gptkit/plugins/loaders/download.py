"""``gptkit download``: fill the Hugging Face cache ahead of use. The hf loader
plugin registers this command (``register_commands``), as any plugin would."""

from __future__ import annotations

from typing import Any

import click


@click.command("download")
@click.argument("name", metavar="NAME_OR_REPO")
@click.option(
    "--revision",
    metavar="REV",
    help="Branch, tag or commit [default: main]; NAME@REV works too.",
)
def download(**opts: Any) -> None:
    """Fetch GPT-2 weights from the Hugging Face Hub into its local cache.

    NAME_OR_REPO is gpt2, gpt2-medium, gpt2-large, gpt2-xl (OpenAI's checkpoints,
    openai-community/...) or any org/repo with the GPT-2 architecture. Only
    config.json and the safetensors weights are fetched, into the standard
    cache (HF_HOME / HF_HUB_CACHE), with a progress bar; the config is checked
    before the weights are downloaded. Afterwards --weights hf:NAME works
    offline (HF_HUB_OFFLINE=1).

    \b
    Examples:
      gptkit download gpt2-medium
      gptkit download openai-community/gpt2-large --revision main
      gptkit generate --weights hf:gpt2-medium "Every effort moves you"
    """
    from gptkit.plugins.loaders.hf import (
        _fetch_tokenizer_files,
        fetch_weights,
        read_hf_config,
    )
    from gptkit.plugins.loaders.hub import (
        CONFIG,
        fetch,
        parse_hub_name,
        snapshot_commit,
    )

    name = opts["name"].removeprefix("hf:")
    model = parse_hub_name(name, opts["revision"])
    config_path = fetch(model, CONFIG)
    cfg, _ = read_hf_config(config_path)  # a known family? (before a large download)
    files = fetch_weights(model)
    if cfg.arch != "gpt2":  # its own tokenizer (GPT-2's is built in)
        _fetch_tokenizer_files(model)
    size = sum(path.stat().st_size for path in files)
    commit = snapshot_commit(config_path)
    click.echo(
        f"{model.repo_id}"
        + (f" (commit {commit})" if commit else "")
        + f": {cfg.arch}, {cfg.n_layers} layers, {cfg.emb_dim} wide,"
        f" {size / 1e6:,.1f} MB of weights, cached in:",
    )
    click.echo(str(config_path.parent))
