"""Re-export of :mod:`gptkit.errors` under the path third-party plugins import."""

from gptkit.errors import *  # noqa: F403
from gptkit.errors import __all__  # noqa: F401
