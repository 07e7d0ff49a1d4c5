/* Weight-only quantized matrix products for x86-64 CPUs with AVX2 and FMA.
 *
 * y[M, N] = x[M, K] . W[N, K]^T (+ bias[N]), with W stored as
 *   int8: w[n, k] = q[n, k] * scale[n]               (q int8, per output channel)
 *   int4: w[n, k] = q[n, k] * scale[n, g] + zero[n, g] (q in 0..15, g = k / group)
 * Activations and accumulation stay float32: each weight is widened to float32
 * in registers and multiplied with an FMA, so the weights cross the memory bus
 * as 1 or 0.5 bytes. Made for small M (decoding: one row per sequence).
 *
 * int4 layout: a row holds K / 2 bytes; each run of 32 weights (k0 = 32 c) is
 * 16 bytes, byte j carrying weight k0 + j in its low nibble and k0 + 16 + j in
 * its high nibble.
 *
 * Why this file exists: PyTorch's packed CPU kernels (_weight_int8pack_mm,
 * _weight_int4pack_mm_for_cpu) vectorise only with AVX-512 and run ~10x slower
 * than an fp32 product on AVX2-only CPUs (measured; see the README).
 *
 * Built at first use by gptkit.plugins.quantizers.native with
 * gcc -O3 -mavx2 -mfma -fopenmp -shared; threads split the N output channels.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

static inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

/* 8 int8 weights at p -> 8 floats */
static inline __m256 load_i8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}

int gk_abi_version(void) { return 2; }

/* int8 rows [n, n + R) of W against every row of x; R <= 4, K % 16 == 0. */
static void int8_block(const float* x, int64_t M, int64_t K, const int8_t* w,
                       const float* scale, const float* bias, float* y, int64_t N,
                       int64_t n, int R) {
  const int8_t* r[4];
  for (int i = 0; i < 4; ++i) r[i] = w + (n + (i < R ? i : 0)) * K;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    __m256 a[4][2];
    for (int i = 0; i < 4; ++i) a[i][0] = a[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      __m256 x0 = _mm256_loadu_ps(xr + k), x1 = _mm256_loadu_ps(xr + k + 8);
      for (int i = 0; i < 4; ++i) {
        a[i][0] = _mm256_fmadd_ps(load_i8(r[i] + k), x0, a[i][0]);
        a[i][1] = _mm256_fmadd_ps(load_i8(r[i] + k + 8), x1, a[i][1]);
      }
    }
    for (int i = 0; i < R; ++i) {
      float v = hsum(_mm256_add_ps(a[i][0], a[i][1])) * scale[n + i];
      y[m * N + n + i] = bias ? v + bias[n + i] : v;
    }
  }
}

int gk_int8_linear(const float* x, int64_t M, int64_t K, const int8_t* w,
                   const float* scale, const float* bias, float* y, int64_t N,
                   int threads) {
  int64_t blocks = (N + 3) / 4;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t n = b * 4;
    int R = N - n < 4 ? (int)(N - n) : 4;
    int8_block(x, M, K, w, scale, bias, y, N, n, R);
  }
  return 0;
}

/* 32 int4 weights (16 bytes at p) times x[0..32) added into acc0/acc1. */
static inline void int4_chunk(const uint8_t* p, const float* x, __m256* acc0,
                              __m256* acc1) {
  const __m256i low = _mm256_set1_epi32(15);
  __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p));
  __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + 8)));
  __m256 w0 = _mm256_cvtepi32_ps(_mm256_and_si256(b0, low));  /* k 0..7 */
  __m256 w1 = _mm256_cvtepi32_ps(_mm256_and_si256(b1, low));  /* k 8..15 */
  __m256 w2 = _mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4));   /* k 16..23 */
  __m256 w3 = _mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4));   /* k 24..31 */
  *acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), *acc0);
  *acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), *acc1);
  *acc0 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + 16), *acc0);
  *acc1 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + 24), *acc1);
}

/* int4 rows [n, n + R); xsum[m, g] = sum of x[m] over group g. */
static void int4_block(const float* x, const float* xsum, int64_t M, int64_t K,
                       const uint8_t* w, const float* scale, const float* zero,
                       int64_t group, const float* bias, float* y, int64_t N,
                       int64_t n, int R) {
  int64_t G = K / group;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    const float* xs = xsum + m * G;
    for (int i = 0; i < R; ++i) {
      const uint8_t* row = w + (n + i) * (K / 2);
      const float* sc = scale + (n + i) * G;
      const float* ze = zero + (n + i) * G;
      __m256 total = _mm256_setzero_ps();
      float offset = 0.0f;
      for (int64_t g = 0; g < G; ++g) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int64_t k = g * group; k < (g + 1) * group; k += 32)
          int4_chunk(row + k / 2, xr + k, &a0, &a1);
        total = _mm256_fmadd_ps(_mm256_add_ps(a0, a1), _mm256_set1_ps(sc[g]), total);
        offset += ze[g] * xs[g];
      }
      float v = hsum(total) + offset;
      y[m * N + n + i] = bias ? v + bias[n + i] : v;
    }
  }
}

/* Returns 0, or -1 when out of memory. K % group == 0, group % 32 == 0. */
int gk_int4_linear(const float* x, int64_t M, int64_t K, const uint8_t* w,
                   const float* scale, const float* zero, int64_t group,
                   const float* bias, float* y, int64_t N, int threads) {
  int64_t G = K / group;
  float* xsum = (float*)malloc(sizeof(float) * (size_t)(M * G));
  if (!xsum) return -1;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      float s = 0.0f;
      for (int64_t k = g * group; k < (g + 1) * group; ++k) s += x[m * K + k];
      xsum[m * G + g] = s;
    }
  int64_t blocks = (N + 3) / 4;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t n = b * 4;
    int R = N - n < 4 ? (int)(N - n) : 4;
    int4_block(x, xsum, M, K, w, scale, zero, group, bias, y, N, n, R);
  }
  free(xsum);
  return 0;
}
