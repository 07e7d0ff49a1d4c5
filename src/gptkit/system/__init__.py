"""Operating-system plumbing without torch: atomic storage, the directory lock,
free memory and allocator tuning, progress bars.

May import: :mod:`gptkit.errors` only."""
