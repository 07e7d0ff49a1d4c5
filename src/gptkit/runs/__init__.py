"""A run as a guarded directory: composing a training run from settings, resuming
it, the lock and memory preflight that guard it, and its files (config.json,
metrics.jsonl, samples.jsonl) read and written here.

May import: :mod:`gptkit.formats`, :mod:`gptkit.core`, :mod:`gptkit.system`,
:mod:`gptkit.errors`."""
