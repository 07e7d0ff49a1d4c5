"""User-facing errors: the command line prints them as one line and exits with 2."""

from __future__ import annotations


class GptkitError(Exception):
    """Bad input or an impossible request, explained in one line for the user."""


class OptionError(GptkitError, ValueError):
    """An unknown option key or a value outside its valid range."""


class PluginError(GptkitError):
    """A plugin failed to load or broke the plugin contract."""
