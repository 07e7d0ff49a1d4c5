"""The continuous-batching engine behind ``gptkit serve``: requests, per-request
rows (sampler, stop strings, text stream) and the scheduler that feeds one decode
loop.

May import: :mod:`gptkit.api`, :mod:`gptkit.core` and below (not the HTTP layer
above it). Unlike serve's HTTP modules, which reach the library only through
:mod:`gptkit.api` (the ``serve-thin`` contract in ``pyproject.toml``), the engine
imports the core directly: it *is* an engine, one level under the HTTP layer. It
drives the model's forward pass and key/value cache row by row, gives each row's
logits to its own sampler plugin instance, and batches requests the library's
one-call ``generate`` never sees, so it works with the core's model, cache and
sampler interfaces themselves, not with a finished-generation API."""
