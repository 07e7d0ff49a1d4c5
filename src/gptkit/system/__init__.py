"""Operating-system plumbing without torch: atomic storage, the directory lock,
free memory and allocator tuning, progress bars, the C kernels' builder and the
decoding attention kernel (torch imported inside its function only).

May import: :mod:`gptkit.errors` only."""
