"""The trainer and what it needs past the model: its checkpointing and state,
mixed precision, DDP/FSDP, the data order.

May import: the rest of :mod:`gptkit.core`, :mod:`gptkit.system`,
:mod:`gptkit.errors`."""
