"""``gptkit serve``: an OpenAI-compatible HTTP server with continuous batching."""

from __future__ import annotations

import os
from typing import Any

import click

from gptkit.cli.flags import device_option
from gptkit.core.errors import GptkitError

SERVE_EXTRA = ("starlette", "uvicorn", "pydantic", "prometheus_client")


def _require_serve_extra() -> None:
    import importlib.util

    missing = [m for m in SERVE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise GptkitError(
            f"gptkit serve needs {', '.join(missing)}: pip install 'gptkit[serve]'"
        )


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise GptkitError(
            f"--api-key-env {env_name}: the environment variable is not set or empty"
        )
    return key


@click.command()
@click.option(
    "--weights",
    metavar="SPEC",
    help="RUN_DIR or checkpoint dir, hf:gpt2, book:model.pth, ...",
)
@click.option(
    "--preset",
    help="Serve a freshly initialised preset instead of weights (tests, load tests).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of --preset's init."
)
@click.option(
    "--n-heads",
    type=click.IntRange(min=1),
    help="Attention heads, for weights whose file does not say (book: .pth files).",
)
@click.option(
    "--model-name",
    help="The model's id in the API (default: from --weights, e.g. gpt2).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port (0: any free port, printed at start).",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Sequences decoded together (key/value cache rows).",
)
@click.option(
    "--max-seq-len",
    type=click.IntRange(min=2),
    help="Prompt + new tokens per sequence (default: the context length).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=0),
    default=64,
    show_default=True,
    help="Requests waiting for a row; more get 503 with Retry-After.",
)
@click.option(
    "--prefill-chunk",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Prompt tokens prefilled per step (long prompts do not stall the batch).",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds a request may take, waiting included (504 after).",
)
@click.option(
    "--api-key-env",
    metavar="VAR",
    help="Require 'Authorization: Bearer KEY', KEY read from this variable.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=1 << 20,
    show_default=True,
    help="Largest request body accepted (413 beyond).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="On SIGTERM, seconds in-flight requests may take to finish.",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per request.")
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
)
@device_option
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="CPU threads for torch (0: torch's default).",
)
def serve(**opts: Any) -> int:
    """Serve a model over HTTP with OpenAI's completions API.

    Concurrent requests share the model's forward passes (continuous
    batching); responses stream as server-sent events with "stream": true.
    Any OpenAI client works: base_url http://HOST:PORT/v1.

    \b
    Examples:
      gptkit serve --weights hf:gpt2 --port 8000
      GPTKIT_API_KEY=secret gptkit serve --weights runs/NAME \\
          --max-batch-size 16 --api-key-env GPTKIT_API_KEY
      gptkit serve --preset gpt2-124m --max-seq-len 256     # random weights
    """
    _require_serve_extra()
    if (opts["weights"] is None) == (opts["preset"] is None):
        raise GptkitError("give either --weights SPEC or --preset NAME")
    from gptkit.serve.settings import ServeSettings

    settings = ServeSettings(
        host=opts["host"],
        port=opts["port"],
        model_name=opts["model_name"],
        max_batch_size=opts["max_batch_size"],
        max_queue=opts["max_queue"],
        max_seq_len=opts["max_seq_len"],
        prefill_chunk=opts["prefill_chunk"],
        request_timeout=opts["request_timeout"],
        api_key=_api_key(opts["api_key_env"]),
        max_body_bytes=opts["max_body_bytes"],
        log_json=opts["log_json"],
        drain_timeout=opts["drain_timeout"],
    )
    import torch

    from gptkit.serve.loading import load_model
    from gptkit.serve.server import serve as run_server

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    model, name = load_model(
        opts["weights"],
        preset=opts["preset"],
        seed=opts["seed"],
        device=opts["device"],
        dtype=opts["dtype"],
        hints={"n_heads": opts["n_heads"]} if opts["n_heads"] else None,
    )
    return run_server(model, settings.model_name or name, settings)
