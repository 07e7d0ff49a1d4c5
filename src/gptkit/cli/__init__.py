"""The ``gptkit`` command line (click). Commands are imported lazily, so
``gptkit --help`` imports neither torch nor tiktoken."""
