/* Integer dot-product kernels for decoding: int8 or int4 weights times int8
 * activations, int32 accumulation, one float scale per block of 32 inputs.
 *
 * y[M, N] = x[M, K] . W[N, K]^T (+ bias[N]) where each call first quantizes the
 * M activation rows to int8 in blocks of 32 (d = max|x_b| / 127, q = round(x / d),
 * the activation side of llama.cpp's Q8_0 x Q8_0 scheme; written anew here):
 *
 *   int8: w[n, k] = qw[n, k] * scale[n]  (qw in -127..127)
 *         y[m, n] = scale[n] * sum_b d[m, b] * sum_{k in b} qw[n, k] qx[m, k]
 *   int4: w[n, k] = qw[n, k] * scale[n, g] + zero[n, g]  (qw in 0..15, g = k / group)
 *         y[m, n] = sum_g scale[n, g] sum_{b in g} d[m, b] dot_b + zero[n, g] xsum[m, g]
 *         with xsum the float sum of x over the group (exact, not quantized).
 *
 * The integer dot of a block runs in 32-bit lanes (AVX2: vpmaddubsw + vpmaddwd,
 * unsigned x signed bytes; AVX512-VNNI: vpdpbusd), is converted to float once
 * per block and scaled by the block's activation scale with one FMA.
 * Unsigned x signed: int4 weights are already unsigned; int8 weights are
 * made unsigned on the fly, AVX2 by moving their signs onto the activations
 * (|w| * sign(x, w), llama.cpp's trick), AVX-512 by flipping the top bit
 * (w + 128) and subtracting 128 * sum(qx) per block afterwards, a term that does
 * not depend on the weight row and is computed once per activation row.
 *
 * int4 storage (see formats.py): each run of 32 weights is 16 bytes, byte j
 * holding weight j in its low nibble and j + 16 in its high nibble. A 32-byte
 * load covers two runs A and B; its low nibbles are A0-15 B0-15 and its high
 * nibbles A16-31 B16-31, so the activations of each 64 inputs are stored in that
 * order once per call (qx is permuted, the weights are read as stored).
 *
 * Compiled once per instruction set from this one source (-DGK_ISA via the
 * compiler's -m flags: __AVX512VNNI__ selects the AVX-512 paths) by
 * gptkit.plugins.quantizers.native; threads (OpenMP) split the N output
 * channels, four at a time.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define GK_VNNI 1
#define GK_ISA_NAME "avx512vnni"
#else
#define GK_VNNI 0
#define GK_ISA_NAME "avx2"
#endif

int gk_abi_version(void) { return 2; }
const char* gk_isa(void) { return GK_ISA_NAME; }

static inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

/* ---- activation quantization ------------------------------------------------ */

/* 32 floats -> 32 int8 at q (in order); returns the block's scale d. The
 * arithmetic is the reference's (torch): d = amax / 127, q = rint(x * (1 / d)). */
static inline float quant_block(const float* x, int8_t* q) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
  __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
  __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                           _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  float amax = _mm_cvtss_f32(h);
  float d = amax / 127.0f;
  float inv = d > 0.0f ? 1.0f / d : 0.0f;
  __m256 iv = _mm256_set1_ps(inv);
  const int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, iv), mode));
  __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, iv), mode));
  __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, iv), mode));
  __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, iv), mode));
  __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256((__m256i*)q, p);
  return d;
}

static inline int32_t block_sum(const int8_t* q) {
  __m256i v = _mm256_loadu_si256((const __m256i*)q);
  __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), v);
  __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

/* Scratch of one call: quantized rows and their scales. */
typedef struct {
  int8_t* q;     /* M x K */
  float* d;      /* M x K/32, per block */
  float* dexp;   /* M x (K/32) x 8: each block's scale spread for the kernel's lanes */
  float* corr;   /* M: int8 AVX-512 path, 128 * sum_b d_b * sum(q_b) */
  float* xsum;   /* M x G: int4, float sum of x over each group */
} scratch_t;

static void scratch_free(scratch_t* s) {
  free(s->q);
  free(s->d);
  free(s->dexp);
  free(s->corr);
  free(s->xsum);
}

/* int8 weights: qx in natural order; dexp[b] = 8 copies of d_b. */
static int quant_rows_q8(const float* x, int64_t M, int64_t K, scratch_t* s) {
  int64_t B = K / 32;
  s->q = (int8_t*)malloc((size_t)(M * K) + 64);
  s->d = (float*)malloc(sizeof(float) * (size_t)(M * B));
  s->dexp = (float*)malloc(sizeof(float) * (size_t)(M * B * 8) + 64);
  s->corr = (float*)malloc(sizeof(float) * (size_t)M);
  s->xsum = NULL;
  if (!s->q || !s->d || !s->dexp || !s->corr) return -1;
  for (int64_t m = 0; m < M; ++m) {
    float corr = 0.0f;
    for (int64_t b = 0; b < B; ++b) {
      int8_t* q = s->q + m * K + b * 32;
      float d = quant_block(x + m * K + b * 32, q);
      s->d[m * B + b] = d;
      _mm256_storeu_ps(s->dexp + (m * B + b) * 8, _mm256_set1_ps(d));
      corr += d * (float)block_sum(q);
    }
    s->corr[m] = 128.0f * corr;
  }
  return 0;
}

/* int4 weights: each 64 inputs stored as A0-15 B0-15 A16-31 B16-31 (A, B its two
 * blocks of 32; a final lone block keeps its order); dexp per 64 inputs:
 * dA x4, dB x4 (the lanes of vpmaddwd / vpdpbusd over that order). */
static int quant_rows_q4(const float* x, int64_t M, int64_t K, int64_t group,
                         scratch_t* s) {
  int64_t B = K / 32, G = K / group;
  s->q = (int8_t*)malloc((size_t)(M * K) + 64);
  s->d = (float*)malloc(sizeof(float) * (size_t)(M * B));
  s->dexp = (float*)malloc(sizeof(float) * (size_t)(M * B * 8) + 64);
  s->xsum = (float*)malloc(sizeof(float) * (size_t)(M * G));
  s->corr = NULL;
  if (!s->q || !s->d || !s->dexp || !s->xsum) return -1;
  int8_t tmp[64];
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    int8_t* qr = s->q + m * K;
    float* de = s->dexp + m * B * 8;
    int64_t b = 0;
    for (; b + 2 <= B; b += 2) {
      float dA = quant_block(xr + b * 32, tmp);
      float dB = quant_block(xr + b * 32 + 32, tmp + 32);
      memcpy(qr + b * 32, tmp, 16);
      memcpy(qr + b * 32 + 16, tmp + 32, 16);
      memcpy(qr + b * 32 + 32, tmp + 16, 16);
      memcpy(qr + b * 32 + 48, tmp + 48, 16);
      s->d[m * B + b] = dA;
      s->d[m * B + b + 1] = dB;
      _mm256_storeu_ps(de + b * 8, _mm256_setr_ps(dA, dA, dA, dA, dB, dB, dB, dB));
    }
    if (b < B) {
      float d = quant_block(xr + b * 32, qr + b * 32);
      s->d[m * B + b] = d;
      _mm256_storeu_ps(de + b * 8, _mm256_set1_ps(d));
    }
    for (int64_t g = 0; g < G; ++g) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t k = g * group; k < (g + 1) * group; k += 8)
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(xr + k));
      s->xsum[m * G + g] = hsum8(acc);
    }
  }
  return 0;
}

/* ---- int8 weights ------------------------------------------------------------ */

#define TILE 4
/* Software prefetch distance, in rows ahead of the row being read (a tile's
 * rows are contiguous, so this is a few tiles ahead): the hardware prefetchers
 * ramp up poorly on rows of a few hundred bytes. */
#ifndef PF8
#define PF8 8
#endif
#ifndef PF4
#define PF4 16
#endif

static void q8_tile(const scratch_t* s, int64_t M, int64_t K, const int8_t* w,
                    const float* scale, const float* bias, float* y, int64_t N,
                    int64_t n, int R) {
  const int8_t* r[TILE];
  for (int i = 0; i < TILE; ++i) r[i] = w + (n + (i < R ? i : 0)) * K;
  int64_t B = K / 32;
  for (int64_t m = 0; m < M; ++m) {
    const int8_t* qx = s->q + m * K;
    const float* de = s->dexp + m * B * 8;
    float out[TILE];
#if GK_VNNI
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[TILE];
    for (int i = 0; i < TILE; ++i) acc[i] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
      __m512i xv = _mm512_loadu_si512((const void*)(qx + k));
      /* blocks k/32 and k/32 + 1: 8 lanes each, their scales side by side */
      __m512 dv = _mm512_loadu_ps(de + (k / 32) * 8);
      for (int i = 0; i < TILE; ++i) {
        _mm_prefetch((const char*)(r[i] + k + PF8 * K), _MM_HINT_T0);
        __m512i wv = _mm512_xor_si512(_mm512_loadu_si512((const void*)(r[i] + k)), flip);
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), dv, acc[i]);
      }
    }
    float tail[TILE] = {0};
    if (k < K) { /* one block of 32 left */
      const __m256i flip8 = _mm256_set1_epi8((char)0x80);
      __m256i xv = _mm256_loadu_si256((const __m256i*)(qx + k));
      __m256 dv = _mm256_loadu_ps(de + (k / 32) * 8);
      for (int i = 0; i < TILE; ++i) {
        __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(r[i] + k)), flip8);
        __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
        tail[i] = hsum8(_mm256_mul_ps(_mm256_cvtepi32_ps(dot), dv));
      }
    }
    for (int i = 0; i < TILE; ++i)
      out[i] = _mm512_reduce_add_ps(acc[i]) + tail[i] - s->corr[m];
#else
    __m256 acc[TILE];
    for (int i = 0; i < TILE; ++i) acc[i] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t k = 0; k < K; k += 32) {
      __m256i xv = _mm256_loadu_si256((const __m256i*)(qx + k));
      __m256 dv = _mm256_loadu_ps(de + (k / 32) * 8);
      for (int i = 0; i < TILE; ++i) {
        if ((k & 63) == 0) _mm_prefetch((const char*)(r[i] + k + PF8 * K), _MM_HINT_T0);
        __m256i wv = _mm256_loadu_si256((const __m256i*)(r[i] + k));
        __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        __m256i dot = _mm256_madd_epi16(p16, ones);
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), dv, acc[i]);
      }
    }
    for (int i = 0; i < TILE; ++i) out[i] = hsum8(acc[i]);
#endif
    for (int i = 0; i < R; ++i) {
      float v = out[i] * scale[n + i];
      y[m * N + n + i] = bias ? v + bias[n + i] : v;
    }
  }
}

/* Returns 0, or -1 when out of memory. K % 32 == 0. */
int gk_q8_linear(const float* x, int64_t M, int64_t K, const int8_t* w,
                 const float* scale, const float* bias, float* y, int64_t N,
                 int threads) {
  scratch_t s;
  memset(&s, 0, sizeof s);
  if (quant_rows_q8(x, M, K, &s) != 0) {
    scratch_free(&s);
    return -1;
  }
  int64_t tiles = (N + TILE - 1) / TILE;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t n = t * TILE;
    int R = N - n < TILE ? (int)(N - n) : TILE;
    q8_tile(&s, M, K, w, scale, bias, y, N, n, R);
  }
  scratch_free(&s);
  return 0;
}

/* ---- int4 weights ------------------------------------------------------------ */

/* Integer dot of 64 weights (32 packed bytes at p) with 64 permuted activations:
 * 8 int32 lanes, lanes 0-3 block A, 4-7 block B. */
static inline __m256i q4_dot64(const uint8_t* p, __m256i x_lo, __m256i x_hi) {
  const __m256i mask = _mm256_set1_epi8(15);
  __m256i b = _mm256_loadu_si256((const __m256i*)p);
  __m256i lo = _mm256_and_si256(b, mask);
  __m256i hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), mask);
#if GK_VNNI
  __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, x_lo);
  return _mm256_dpbusd_epi32(dot, hi, x_hi);
#else
  /* products <= 15 * 127; two pairs plus two pairs fit int16 (<= 7620) */
  __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x_lo), _mm256_maddubs_epi16(hi, x_hi));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
#endif
}

/* One lone block of 32 weights (16 bytes) in natural order: 8 int32 lanes. */
static inline __m256i q4_dot32(const uint8_t* p, __m256i xv) {
  const __m128i mask = _mm_set1_epi8(15);
  __m128i b = _mm_loadu_si128((const __m128i*)p);
  __m256i wv = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), mask), _mm_and_si128(b, mask));
#if GK_VNNI
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, xv);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), _mm256_set1_epi16(1));
#endif
}

static void q4_tile(const scratch_t* s, int64_t M, int64_t K, const uint8_t* w,
                    const float* scale, const float* zero, int64_t group,
                    const float* bias, float* y, int64_t N, int64_t n, int R) {
  const uint8_t* r[TILE];
  const float* sc[TILE];
  for (int i = 0; i < TILE; ++i) {
    int64_t row = n + (i < R ? i : 0);
    r[i] = w + row * (K / 2);
    sc[i] = scale + row * (K / group);
  }
  int64_t B = K / 32, G = K / group;
  for (int64_t m = 0; m < M; ++m) {
    const int8_t* qx = s->q + m * K;
    const float* de = s->dexp + m * B * 8;
    __m256 total[TILE];
    for (int i = 0; i < TILE; ++i) total[i] = _mm256_setzero_ps();
    if (group >= 64) {
      for (int64_t g = 0; g < G; ++g) {
        __m256 acc[TILE];
        for (int i = 0; i < TILE; ++i) acc[i] = _mm256_setzero_ps();
        int64_t k = g * group, end = k + group;
        for (; k + 64 <= end; k += 64) {
          __m256i x_lo = _mm256_loadu_si256((const __m256i*)(qx + k));
          __m256i x_hi = _mm256_loadu_si256((const __m256i*)(qx + k + 32));
          __m256 dv = _mm256_loadu_ps(de + (k / 32) * 8);
          for (int i = 0; i < TILE; ++i) {
            _mm_prefetch((const char*)(r[i] + k / 2 + PF4 * (K / 2)), _MM_HINT_T0);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q4_dot64(r[i] + k / 2, x_lo, x_hi)), dv, acc[i]);
          }
        }
        for (int i = 0; i < TILE; ++i)
          total[i] = _mm256_fmadd_ps(acc[i], _mm256_set1_ps(sc[i][g]), total[i]);
      }
    } else { /* group 32: the two blocks of a 64 belong to two groups */
      int64_t k = 0;
      for (; k + 64 <= K; k += 64) {
        __m256i x_lo = _mm256_loadu_si256((const __m256i*)(qx + k));
        __m256i x_hi = _mm256_loadu_si256((const __m256i*)(qx + k + 32));
        __m256 dv = _mm256_loadu_ps(de + (k / 32) * 8);
        int64_t g = k / 32;
        for (int i = 0; i < TILE; ++i) {
          _mm_prefetch((const char*)(r[i] + k / 2 + PF4 * (K / 2)), _MM_HINT_T0);
          __m256 sv = _mm256_set_m128(_mm_set1_ps(sc[i][g + 1]), _mm_set1_ps(sc[i][g]));
          __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(q4_dot64(r[i] + k / 2, x_lo, x_hi)), dv);
          total[i] = _mm256_fmadd_ps(f, sv, total[i]);
        }
      }
      if (k < K) {
        __m256i xv = _mm256_loadu_si256((const __m256i*)(qx + k));
        __m256 dv = _mm256_loadu_ps(de + (k / 32) * 8);
        for (int i = 0; i < TILE; ++i) {
          __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(q4_dot32(r[i] + k / 2, xv)), dv);
          total[i] = _mm256_fmadd_ps(f, _mm256_set1_ps(sc[i][k / 32]), total[i]);
        }
      }
    }
    const float* xs = s->xsum + m * G;
    for (int i = 0; i < R; ++i) {
      const float* ze = zero + (n + i) * G;
      int64_t g = 0;
      for (; g + 8 <= G; g += 8)
        total[i] = _mm256_fmadd_ps(_mm256_loadu_ps(ze + g), _mm256_loadu_ps(xs + g), total[i]);
      float offset = 0.0f;
      for (; g < G; ++g) offset += ze[g] * xs[g];
      float v = hsum8(total[i]) + offset;
      y[m * N + n + i] = bias ? v + bias[n + i] : v;
    }
  }
}

/* Returns 0, or -1 when out of memory. K % group == 0, group % 32 == 0; a
 * lone final block of 32 only when group == 32. */
int gk_q4_linear(const float* x, int64_t M, int64_t K, const uint8_t* w,
                 const float* scale, const float* zero, int64_t group,
                 const float* bias, float* y, int64_t N, int threads) {
  scratch_t s;
  memset(&s, 0, sizeof s);
  if (quant_rows_q4(x, M, K, group, &s) != 0) {
    scratch_free(&s);
    return -1;
  }
  int64_t tiles = (N + TILE - 1) / TILE;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t n = t * TILE;
    int R = N - n < TILE ? (int)(N - n) : TILE;
    q4_tile(&s, M, K, w, scale, zero, group, bias, y, N, n, R);
  }
  scratch_free(&s);
  return 0;
}

/* Exposed for tests: the activation quantization alone (int8 path's order). */
int gk_quantize_rows(const float* x, int64_t M, int64_t K, int8_t* q, float* d) {
  scratch_t s;
  memset(&s, 0, sizeof s);
  if (quant_rows_q8(x, M, K, &s) != 0) {
    scratch_free(&s);
    return -1;
  }
  memcpy(q, s.q, (size_t)(M * K));
  memcpy(d, s.d, sizeof(float) * (size_t)(M * (K / 32)));
  scratch_free(&s);
  return 0;
}
