"""A gptkit plugin that raises on import (a test fixture).

When ``GPTKIT_BROKEN_MARKER`` names a file, the import touches it first, so a
test can tell whether gptkit tried to import the plugin at all.
"""

from __future__ import annotations

import os
from pathlib import Path

_marker = os.environ.get("GPTKIT_BROKEN_MARKER")
if _marker:
    Path(_marker).touch()

raise RuntimeError("gptkit-broken-plugin fails on import, on purpose")
