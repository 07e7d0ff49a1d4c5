"""Shared fixtures of the example plugin's tests.

gptkit's fixtures (``gptkit_registry``, ``gptkit_cli``, ``gptkit_checkpoint``,
...) come from gptkit's pytest plugin, ``gptkit.testing``: nothing to import.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

DIST = "gptkit-example-plugin"


def _installed() -> bool:
    try:
        metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Only needed because gptkit's own test run collects these tests too: a
    # plugin's tests always run with the plugin installed.
    if not _installed():
        skip = pytest.mark.skip(reason=f"{DIST} is not installed (pip install -e .)")
        for item in items:
            if Path(__file__).parent in item.path.parents:
                item.add_marker(skip)


@pytest.fixture
def registry(gptkit_registry):
    """gptkit's built-ins plus this distribution only (strict)."""
    return gptkit_registry(DIST)
