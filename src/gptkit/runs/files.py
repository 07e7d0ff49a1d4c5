"""The run directory's own files: ``config.json`` (the settings a run was started
with, its resolved model and data) read back for ``resume`` and ``Run``.
``metrics.jsonl`` and ``samples.jsonl`` are in :mod:`gptkit.formats.runfiles`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptkit.errors import GptkitError

CONFIG = "config.json"


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise GptkitError(f"{run_dir} is not a gptkit run directory (no {CONFIG})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise GptkitError(f"{path} is not a gptkit run config") from None
    if not isinstance(config, dict):
        raise GptkitError(f"{path} is not a gptkit run config")
    return config


def saved_settings(run_dir: Path) -> dict[str, Any]:
    """The settings a run was started with (what resume restores)."""
    config = read_run_config(run_dir)
    settings = config.get("settings")
    if isinstance(settings, dict):
        return settings
    legacy = config.get("cli")  # run directories written by gptkit 0.1's CLI
    if isinstance(legacy, dict):
        return _from_legacy(legacy)
    raise GptkitError(f"{Path(run_dir) / CONFIG} records no settings")


def _from_legacy(cli: dict[str, Any]) -> dict[str, Any]:
    renamed = {"corpora": "corpus", "max_new_tokens": "max_new_tokens"}
    out = {renamed.get(k, k): v for k, v in cli.items()}
    pairs = out.get("scheduler_options")
    if isinstance(pairs, list):
        from gptkit.core.options import parse_pairs

        out["scheduler_options"] = parse_pairs(pairs)
    return out
