"""Benchmarks of samplers and training throughput (``gptkit bench``).

The same code measures for the command line and for the pytest-benchmark
suites in ``benchmarks/`` (which import these modules), so the two never
disagree:

- :mod:`gptkit.bench.measure`: warm-up and timed repeats, device synchronisation,
  percentiles, peak memory, machine description;
- :mod:`gptkit.bench.runners`: benchmark models, the contenders (gptkit samplers,
  the book's no-cache loop, ``transformers``' ``generate``) with per-token traces;
- :mod:`gptkit.bench.metrics`: quality of generated text (distinct-n, repeated
  n-grams, BLEU, self-BLEU);
- :mod:`gptkit.bench.limits`: memory bandwidth and matrix-multiply peak (measured,
  or a GPU's datasheet), the decode bandwidth bound and MFU;
- :mod:`gptkit.bench.sampling`, :mod:`gptkit.bench.training`: the two benchmarks;
- :mod:`gptkit.bench.results`: JSON results, tables, charts and ``compare``.

Importing this package is cheap: torch is imported when a benchmark runs.
"""

from __future__ import annotations
