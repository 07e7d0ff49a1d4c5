"""Checkpoint directories: the shared layout, the native single-file format and
the sharded (FSDP) format.

May import: the rest of :mod:`gptkit.core` (not the trainer), :mod:`gptkit.system`,
:mod:`gptkit.errors`."""
