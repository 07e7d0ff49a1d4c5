"""The continuous-batching engine behind ``gptkit serve``: requests, per-request
rows (sampler, stop strings, text stream) and the scheduler that feeds one decode
loop.

May import: :mod:`gptkit.core` and below (not the HTTP layer above it)."""
