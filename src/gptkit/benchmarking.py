"""Measurement code shared by the pytest-benchmark suites in ``benchmarks/`` and
the ``gptkit bench`` command: models with fixed random weights, a transformers
twin with identical weights, one runner per decoding method (so every contender
does the same work on the same weights) and the timing loop.

The code lives in :mod:`gptkit.bench.measure` and :mod:`gptkit.bench.runners`;
this module keeps the names the suites import. Torch and transformers are
imported when used.
"""

from __future__ import annotations

from gptkit.bench.measure import Measurement, measure, sync
from gptkit.bench.runners import (
    PROMPT,
    SAMPLER_OPTIONS,
    TRANSFORMERS_MODES,
    Contender,
    Trace,
    bench_model,
    gptkit_runner,
    no_cache_runner,
    trace_gptkit,
    trace_no_cache,
    trace_transformers,
    transformers_kwargs,
    transformers_runner,
    transformers_twin,
)

__all__ = [
    "PROMPT",
    "SAMPLER_OPTIONS",
    "TRANSFORMERS_MODES",
    "Contender",
    "Measurement",
    "Trace",
    "bench_model",
    "gptkit_runner",
    "measure",
    "no_cache_runner",
    "sync",
    "trace_gptkit",
    "trace_no_cache",
    "trace_transformers",
    "transformers_kwargs",
    "transformers_runner",
    "transformers_twin",
]
