"""Quantized weight formats: how a float weight becomes integers and back.

Pure PyTorch, so every function also runs on the meta device (shapes only),
which is how a saved quantized model is rebuilt before its tensors are loaded.

- **int8**, per output channel, symmetric: ``w = q * scale[n]`` with
  ``q = round(w / scale)`` in [-127, 127] and ``scale = max|w[n]| / 127``
  (the scheme of LLM.int8()'s vector-wise weights without outliers, Dettmers et
  al., 2022, and of gpt-fast's ``WeightOnlyInt8QuantHandler``).
- **int4**, group-wise, asymmetric: each run of ``group_size`` inputs of an
  output channel gets ``scale = (max - min) / 15`` and ``zero = min``, so
  ``w = q * scale + zero`` with ``q`` in 0..15 (min-max affine quantization as
  in gpt-fast's int4 handler; Frantar et al. 2022 (GPTQ) and Lin et al. 2023
  (AWQ) use the same storage with smarter rounding).
- int4 packing: two weights per byte. Each run of 32 weights ``k0..k0+31`` of a
  row is 16 bytes; byte ``j`` holds weight ``k0 + j`` in its low nibble and
  ``k0 + 16 + j`` in its high nibble (what the AVX2 kernel unpacks cheaply).
"""

from __future__ import annotations

import torch
from torch import Tensor

INT4_CHUNK = 32


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(q int8 (N, K), scale float32 (N,)) of a float weight (N, K)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def pack_int4(q: Tensor) -> Tensor:
    """(N, K) values in 0..15 -> (N, K / 2) bytes, in the layout above."""
    n, k = q.shape
    runs = q.to(torch.uint8).reshape(n, k // INT4_CHUNK, 2, INT4_CHUNK // 2)
    packed = runs[:, :, 0] | (runs[:, :, 1] << 4)  # (N, K/32, 16)
    return packed.reshape(n, k // 2)


def unpack_int4(packed: Tensor) -> Tensor:
    """(N, K / 2) bytes -> (N, K) values in 0..15 (uint8)."""
    n, half = packed.shape
    runs = packed.reshape(n, half // (INT4_CHUNK // 2), INT4_CHUNK // 2)
    low, high = runs & 15, runs >> 4
    return torch.stack([low, high], dim=2).reshape(n, half * 2)  # (N, K)


#: Ranges tried per int4 group, as fractions of its min-max range (see below).
INT4_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def _int4_affine(groups: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, ...]:
    scale = ((high - low) / 15.0).clamp(min=1e-12)  # (N, G)
    q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15)
    error = ((q * scale[..., None] + low[..., None] - groups) ** 2).sum(dim=-1)
    return q, scale, error


def quantize_int4(weight: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """(packed uint8 (N, K/2), scale (N, G), zero (N, G)) with G = K / group.

    Each group's range is chosen among :data:`INT4_CLIP_RATIOS` of its min-max
    range (shrunk toward its midpoint) by the smallest squared error of the
    group's weights: clipping a few outliers buys a finer step for the rest
    (the grid search of AWQ's weight clipping, Lin et al. 2023, without the
    activation weighting, which would need calibration data).
    """
    n, k = weight.shape
    groups = weight.detach().float().reshape(n, k // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (N, G)
    mid, half = (high + low) / 2, (high - low) / 2
    best_q, best_scale, best_error = _int4_affine(groups, low, high)
    best_low = low
    for ratio in INT4_CLIP_RATIOS[1:]:
        lo, hi = mid - half * ratio, mid + half * ratio
        q, scale, error = _int4_affine(groups, lo, hi)
        better = error < best_error  # (N, G)
        best_q = torch.where(better[..., None], q, best_q)
        best_scale = torch.where(better, scale, best_scale)
        best_low = torch.where(better, lo, best_low)
        best_error = torch.minimum(error, best_error)
    return pack_int4(best_q.reshape(n, k)), best_scale, best_low


def dequantize_int4(
    packed: Tensor, scale: Tensor, zero: Tensor, dtype: torch.dtype
) -> Tensor:
    n, groups = scale.shape
    q = unpack_int4(packed).reshape(n, groups, -1).to(dtype)  # (N, G, group)
    w = q * scale[..., None].to(dtype) + zero[..., None].to(dtype)
    return w.reshape(n, -1)


def _pad_rows(t: Tensor, lanes: int) -> Tensor:
    extra = -t.shape[0] % lanes
    if extra == 0:
        return t
    return torch.cat([t, t.new_zeros((extra, *t.shape[1:]))])


def tile_int8(q: Tensor, lanes: int, unsigned: bool) -> Tensor:
    """The integer kernels' int8 layout (``kernels/qdot.c``, "packed weights"):
    (N, K) int8 -> uint8 (ceil(N / lanes), K / 4, lanes, 4), output channels
    interleaved four inputs at a time; ``unsigned`` stores ``q + 128``."""
    k = q.shape[1]
    w = _pad_rows(q, lanes).reshape(-1, lanes, k // 4, 4).permute(0, 2, 1, 3)
    if unsigned:
        return (w.to(torch.int16) + 128).to(torch.uint8).contiguous()
    return w.contiguous().view(torch.uint8)


def tile_int4(packed: Tensor, scale: Tensor, zero: Tensor, lanes: int) -> Tensor:
    """The integer kernels' int4 layout, one stream per tile of ``lanes``
    channels: (ceil(N / lanes), G, group / 2 * lanes + 8 * lanes) bytes, for
    each group its weights (for inputs 8i..8i+7, ``lanes`` x 4 bytes, byte
    ``j`` of a channel holding input ``8i + j`` in its low nibble and
    ``8i + 4 + j`` in its high one), then its ``lanes`` float32 scales and
    ``lanes`` zero points."""
    q = _pad_rows(unpack_int4(packed), lanes)
    tiles, k = q.shape[0] // lanes, q.shape[1]
    groups = scale.shape[1]
    q = q.reshape(tiles, lanes, k // 8, 2, 4).permute(0, 2, 1, 3, 4)
    weights = (q[..., 0, :] | (q[..., 1, :] << 4)).reshape(tiles, groups, -1)

    def per_tile(t: Tensor) -> Tensor:  # (N, G) -> (tiles, G, lanes * 4) bytes
        t = _pad_rows(t.float(), lanes).reshape(tiles, lanes, groups)
        return t.transpose(1, 2).contiguous().view(torch.uint8)

    return torch.cat([weights, per_tile(scale), per_tile(zero)], dim=2).contiguous()
