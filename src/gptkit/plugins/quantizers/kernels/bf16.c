/* bf16 matrix products for decoding on CPUs with AVX512-BF16.
 *
 * y[M, N] = x[M, K] . W[N, K]^T (+ bias[N]), x, W, bias and y in bfloat16;
 * vdpbf16ps multiplies pairs of bf16 values and accumulates in float32 (16
 * lanes, 32 weights per instruction), so the weights cross the memory bus as 2
 * bytes each and nothing is converted on the way. The float32 sum is rounded
 * to bf16 once, to nearest even (what torch's bf16 linear returns).
 * Made for small M (decoding); threads (OpenMP) split the N outputs, four at a
 * time. K % 32 == 0.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

int gk_abi_version(void) { return 1; }

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

#define TILE 4

static void bf16_tile(const uint16_t* x, int64_t M, int64_t K, const uint16_t* w,
                      const uint16_t* bias, uint16_t* y, int64_t N, int64_t n, int R) {
  const uint16_t* r[TILE];
  for (int i = 0; i < TILE; ++i) r[i] = w + (n + (i < R ? i : 0)) * K;
  for (int64_t m = 0; m < M; ++m) {
    const uint16_t* xr = x + m * K;
    __m512 acc[TILE];
    for (int i = 0; i < TILE; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
      __m512bh xv = (__m512bh)_mm512_loadu_si512((const void*)(xr + k));
      for (int i = 0; i < TILE; ++i)
        acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_loadu_si512((const void*)(r[i] + k)), xv);
    }
    for (int i = 0; i < R; ++i) {
      float v = _mm512_reduce_add_ps(acc[i]);
      if (bias) v += bf16_to_f32(bias[n + i]);
      y[m * N + n + i] = f32_to_bf16(v);
    }
  }
}

int gk_bf16_linear(const uint16_t* x, int64_t M, int64_t K, const uint16_t* w,
                   const uint16_t* bias, uint16_t* y, int64_t N, int threads) {
  int64_t tiles = (N + TILE - 1) / TILE;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t n = t * TILE;
    int R = N - n < TILE ? (int)(N - n) : TILE;
    bf16_tile(x, M, K, w, bias, y, N, n, R);
  }
  return 0;
}
