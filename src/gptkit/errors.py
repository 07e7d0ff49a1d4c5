"""User-facing errors: the command line prints them as one line and exits with 2."""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "CheckpointDamaged",
    "GptkitError",
    "Interrupted",
    "OptionError",
    "PluginError",
    "SettingError",
]


class GptkitError(Exception):
    """Bad input or an impossible request, explained in one line for the user."""


class OptionError(GptkitError, ValueError):
    """An unknown option key or a value outside its valid range."""


class PluginError(GptkitError):
    """A plugin failed to load or broke the plugin contract."""


_SETTING = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class SettingError(GptkitError, ValueError):
    """A setting with a bad value, or settings that do not go together.

    The message names settings as ``{name}`` placeholders, so that each front
    end says them its own way: Python as the keyword (``lr``), the command line
    as the option (``--lr``, through :meth:`render`)::

        raise SettingError("{lr} must be > 0, got -1.0")
    """

    def __init__(self, template: str, *, settings_class: type | None = None) -> None:
        self.template = template
        self.settings_class = settings_class
        self.names = _SETTING.findall(template)
        super().__init__(self.render(lambda name: name))

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each ``{name}`` replaced by ``name_of(name)``."""
        return _SETTING.sub(lambda m: name_of(m.group(1)), self.template)


class CheckpointDamaged(GptkitError):
    """A checkpoint's files cannot be read whole (truncated, corrupt, unsafe):
    resume sets it aside and continues from an older one. An intact checkpoint
    that does not fit the run (another model, process count, ...) raises a
    plain :class:`GptkitError` instead."""


class Interrupted(GptkitError):
    """A signal stopped the work cleanly (not a failure): the command line
    prints the message without ``error:`` and exits with 128 + ``signum``
    (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum
