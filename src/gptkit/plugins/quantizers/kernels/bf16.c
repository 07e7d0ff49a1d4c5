/* bf16 matrix products for decoding on CPUs with AVX512-BF16.
 *
 * y[M, N] = x[M, K] . W[N, K]^T (+ bias[N]), x, W, bias and y in bfloat16;
 * vdpbf16ps multiplies pairs of bf16 values and accumulates in float32 (16
 * lanes, 32 weights per instruction), so the weights cross the memory bus as 2
 * bytes each and nothing is converted on the way. The float32 sum is rounded
 * to bf16 once, to nearest even (what torch's bf16 linear returns).
 *
 * Packed weights (made once, by gptkit.plugins.quantizers.bf16): tiles of 16
 * output channels; within a tile, for each pair of inputs (2k, 2k + 1), the 16
 * channels' two weights side by side (64 bytes: one zmm). Lane c of one
 * vdpbf16ps then accumulates channel c, a tile is one contiguous stream, and
 * no horizontal sum is needed (the layout of the integer kernels' tiles).
 * Made for small M (decoding); threads (OpenMP) split the tiles, each thread
 * reading two tiles at once. K % 32 == 0.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

int gk_abi_version(void) { return 2; }
int gk_lanes(void) { return 16; }

static inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = (uint32_t)v << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* NaN */
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

static inline __m512bh pair(const uint16_t* x) {
  int32_t v;
  memcpy(&v, x, 4);
  return (__m512bh)_mm512_set1_epi32(v);
}

#define WPAIRS(p) ((__m512bh)_mm512_loadu_si512((const void*)(p)))

/* Two tiles at once (each its own contiguous stream): one core keeps more
 * cache misses in flight reading two streams than one. */
static void bf16_tile2(const uint16_t* x, int64_t M, int64_t K, const uint16_t* wa,
                       const uint16_t* wb, const uint16_t* bias, uint16_t* y, int64_t N,
                       int64_t na, int64_t nb) {
  for (int64_t m = 0; m < M; ++m) {
    const uint16_t* xr = x + m * K;
    const uint16_t* p = wa;
    const uint16_t* q = wb;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    for (int64_t k = 0; k < K; k += 4, p += 64, q += 64) { /* 2 pairs: 2 x 64 bytes each */
      __m512bh x0 = pair(xr + k), x1 = pair(xr + k + 2);
      a0 = _mm512_dpbf16_ps(a0, WPAIRS(p), x0);
      b0 = _mm512_dpbf16_ps(b0, WPAIRS(q), x0);
      a1 = _mm512_dpbf16_ps(a1, WPAIRS(p + 32), x1);
      b1 = _mm512_dpbf16_ps(b1, WPAIRS(q + 32), x1);
    }
    float out[16];
    int64_t ns[2] = {na, nb};
    __m512 acc[2] = {_mm512_add_ps(a0, a1), _mm512_add_ps(b0, b1)};
    for (int i = 0; i < 2; ++i) {
      _mm512_storeu_ps(out, acc[i]);
      int R = N - ns[i] < 16 ? (int)(N - ns[i]) : 16;
      for (int c = 0; c < R; ++c) {
        float v = out[c];
        if (bias) v += bf16_to_f32(bias[ns[i] + c]);
        y[m * N + ns[i] + c] = f32_to_bf16(v);
      }
    }
  }
}

/* y = x W^T (+ bias) with W packed as above: ceil(N / 16) tiles of K * 16
 * bf16 values (channels past N are zeros). Tile t is read together with tile
 * t + half (two streams per thread: 16-21% more GB/s from memory than one
 * tile after the other on a Zen 4 EPYC, 1 and 2 threads). Returns 0. */
int gk_bf16_linear(const uint16_t* x, int64_t M, int64_t K, const uint16_t* packed,
                   const uint16_t* bias, uint16_t* y, int64_t N, int threads) {
  int64_t tiles = (N + 15) / 16, half = (tiles + 1) / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t t = 0; t < half; ++t) {
    if (t + half < tiles)
      bf16_tile2(x, M, K, packed + t * K * 16, packed + (t + half) * K * 16, bias, y, N,
                 t * 16, (t + half) * 16);
    else /* the middle tile of an odd count, paired with itself */
      bf16_tile2(x, M, K, packed + t * K * 16, packed + t * K * 16, bias, y, N, t * 16, t * 16);
  }
  return 0;
}
