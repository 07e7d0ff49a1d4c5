"""The scripts behind the figures in the documentation (one-off measurements, not
pytest-benchmark suites): run each from the repository root, e.g.
``python -m benchmarks.scripts.load_memory``."""
