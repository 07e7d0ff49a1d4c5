"""``gptkit serve``: an OpenAI-compatible HTTP server with continuous batching."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import click

from gptkit.api.settings import LoadSettings
from gptkit.cli.flags import given_settings, settings_options
from gptkit.errors import GptkitError
from gptkit.serve.settings import ServeSettings

#: The modules of the ``serve`` extra.
SERVE_EXTRA = ("starlette", "uvicorn", "pydantic", "prometheus_client")
LOAD_OPTIONS = ("weights", "preset", "seed", "n_heads", "dtype", "device", "quantize")


def _require_serve_extra() -> None:
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
@settings_options(LoadSettings, only=LOAD_OPTIONS)
@settings_options(ServeSettings)
@click.pass_context
def serve(ctx: click.Context, **opts: Any) -> int:
    """Serve a model over HTTP with OpenAI's completions API.

    Concurrent requests share the model's forward passes (continuous
    batching); "stream": true sends server-sent events. Any OpenAI client
    works with base_url http://HOST:PORT/v1.

    \b
    Examples:
      gptkit serve --weights hf:gpt2 --port 8000
      GPTKIT_API_KEY=secret gptkit serve --weights runs/NAME \\
          --max-batch-size 16 --api-key-env GPTKIT_API_KEY
      gptkit serve --preset gpt2-124m --max-seq-len 256     # random weights
    """
    _require_serve_extra()
    load = LoadSettings.create(given_settings(ctx, opts, LoadSettings))
    if (load.weights is None) == (load.preset is None):
        raise click.UsageError("give --weights SPEC, or --preset NAME (random weights)")
    settings = ServeSettings.create(given_settings(ctx, opts, ServeSettings))
    api_key = _api_key(settings.api_key_env)

    from gptkit.serve.loading import load_model
    from gptkit.serve.server import serve as run_server

    model, name = load_model(load)
    return run_server(model, settings.model_name or name, settings, api_key)
