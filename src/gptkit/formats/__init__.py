"""Files other tools read and write: Hugging Face model directories, prepared
(memory-mapped) corpora, plots.

May import: :mod:`gptkit.core`, :mod:`gptkit.system`, :mod:`gptkit.errors`."""
