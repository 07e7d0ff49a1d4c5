"""The library layer: what ``import gptkit`` offers Python users.

- :mod:`gptkit.api.model`: ``gptkit.load`` and :class:`LanguageModel` (generate,
  stream, loss, evaluate);
- :mod:`gptkit.api.runs`: ``gptkit.train``, ``gptkit.resume`` and :class:`Run`;
- :mod:`gptkit.api.sampling`: which sampler a generation uses (shared by the
  command line, Python and the HTTP server).

The command line is a client of this layer; this layer composes the core
(:mod:`gptkit.runs.compose` for training) and holds no click and no flag names.
"""
