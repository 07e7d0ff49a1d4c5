"""The settings of every job, as the front ends see them: the dataclasses whose
fields are the Python keywords and the command-line options, and the helpers
that turn them into flags. Torch-free (``gptkit --help`` imports this)."""

from __future__ import annotations

from gptkit.core.options import parse_pairs
from gptkit.core.settings import (
    DEVICES,
    PRESET_NAMES,
    EvalSettings,
    GenerateSettings,
    LoadSettings,
    Settings,
    TrainSettings,
    all_settings_flags,
    flag_of,
)

__all__ = [
    "DEVICES",
    "PRESET_NAMES",
    "EvalSettings",
    "GenerateSettings",
    "LoadSettings",
    "Settings",
    "TrainSettings",
    "all_settings_flags",
    "flag_of",
    "parse_pairs",
]
