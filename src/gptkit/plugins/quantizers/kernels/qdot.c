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
 * The integer dot of a block runs in 32-bit lanes, one output channel per lane
 * (AVX2: vpmaddubsw + vpmaddwd, unsigned x signed bytes; AVX512-VNNI:
 * vpdpbusd), over weights repacked once at load into tiles of 8 / 16 channels
 * (see "packed weights" below); it is converted to float once per block and
 * scaled by the block's activation scale with one FMA. Unsigned x signed:
 * int4 weights are unsigned; int8 weights are stored as w + 128 for AVX-512
 * (128 * sum(qx_b) is subtracted in int32, exactly, per block) and AVX2 moves
 * their signs onto the activations (|w| * sign(x, w), llama.cpp's trick).
 *
 * Compiled once per instruction set from this one source (__AVX512VNNI__
 * selects the AVX-512 paths) by gptkit.plugins.quantizers.native; threads
 * (OpenMP) split the output channels, each reading two tiles at once.
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

int gk_abi_version(void) { return 4; }
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
  int8_t* q;     /* M x K, natural order */
  float* d;      /* M x K/32, per block */
  int32_t* c;    /* M x K/32: -128 * sum(q_b) (int8 AVX-512 path) */
  float* xsum;   /* M x G: int4, float sum of x over each group */
} scratch_t;

static void scratch_free(scratch_t* s) {
  free(s->q);
  free(s->d);
  free(s->c);
  free(s->xsum);
}

/* Quantizes the M rows; group > 0 also computes the float sums per group. */
static int quant_rows(const float* x, int64_t M, int64_t K, int64_t group, scratch_t* s) {
  int64_t B = K / 32, G = group > 0 ? K / group : 0;
  s->q = (int8_t*)malloc((size_t)(M * K) + 64);
  s->d = (float*)malloc(sizeof(float) * (size_t)(M * B) + 64);
  s->c = (int32_t*)malloc(sizeof(int32_t) * (size_t)(M * B) + 64);
  s->xsum = group > 0 ? (float*)malloc(sizeof(float) * (size_t)(M * G) + 64) : NULL;
  if (!s->q || !s->d || !s->c || (group > 0 && !s->xsum)) return -1;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    for (int64_t b = 0; b < B; ++b) {
      int8_t* q = s->q + m * K + b * 32;
      s->d[m * B + b] = quant_block(xr + b * 32, q);
      s->c[m * B + b] = -128 * block_sum(q);
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

/* ---- packed weights -----------------------------------------------------------
 *
 * The weights are repacked once (at load, in PyTorch: linear.py) into tiles of
 * LANES output channels (16 with AVX-512, 8 with AVX2; N padded with zero rows):
 *
 *   int8: tile t, inputs 4i..4i+3: LANES x 4 bytes, channel c's four weights at
 *         bytes 4c..4c+3 (AVX-512: stored as w + 128, unsigned). One vector load
 *         feeds one vpdpbusd / vpmaddubsw for all LANES channels with the four
 *         activations broadcast: each int32 lane is one channel's running dot,
 *         so no horizontal sums, and a tile streams as one contiguous run.
 *   int4: tile t, group g: for inputs 8i..8i+7 of the group, LANES x 4 bytes,
 *         byte 4c + j holding channel c's weight 8i + j in its low nibble and
 *         8i + 4 + j in its high one; then the group's LANES float32 scales and
 *         LANES zero points. A tile is one contiguous stream with its scales
 *         (read from two other arrays, 15-25% slower from memory on a Zen 4).
 *
 * Per block of 32 inputs the int32 lanes are converted to float once and
 * scaled by the block's activation scale with one FMA; int4 applies the
 * group's scales and zero points once per group.
 */
#if GK_VNNI
#define LANES 16
typedef __m512 vf;
typedef __m512i vi;
#define VF_ZERO _mm512_setzero_ps()
#define VI_ZERO _mm512_setzero_si512()
#define VF_SET1 _mm512_set1_ps
#define VI_SET1 _mm512_set1_epi32
#define VF_FMA _mm512_fmadd_ps
#define VF_CVT _mm512_cvtepi32_ps
#define VF_LOAD _mm512_loadu_ps
#define VI_LOAD(p) _mm512_loadu_si512((const void*)(p))
#define VI_ADD _mm512_add_epi32
#else
#define LANES 8
typedef __m256 vf;
typedef __m256i vi;
#define VF_ZERO _mm256_setzero_ps()
#define VI_ZERO _mm256_setzero_si256()
#define VF_SET1 _mm256_set1_ps
#define VI_SET1 _mm256_set1_epi32
#define VF_FMA _mm256_fmadd_ps
#define VF_CVT _mm256_cvtepi32_ps
#define VF_LOAD _mm256_loadu_ps
#define VI_LOAD(p) _mm256_loadu_si256((const __m256i*)(p))
#define VI_ADD _mm256_add_epi32
#endif

/* How threads share the tiles (equal static shares; dynamic scheduling was
 * tried and measured no better). */
#ifndef GK_SCHED
#define GK_SCHED static
#endif

int gk_lanes(void) { return LANES; }

/* Stores R <= LANES floats of v * sc + bias at y. */
static inline void store_out(vf v, const float* scale, const float* bias, float* y, int R) {
  float tmp[LANES];
#if GK_VNNI
  _mm512_storeu_ps(tmp, v);
#else
  _mm256_storeu_ps(tmp, v);
#endif
  for (int c = 0; c < R; ++c) {
    float o = scale ? tmp[c] * scale[c] : tmp[c];
    y[c] = bias ? o + bias[c] : o;
  }
}

static inline int32_t xdword(const int8_t* q) {
  int32_t v;
  memcpy(&v, q, 4);
  return v;
}

/* The int32 dot of one block of 32 inputs for LANES channels: 8 weight loads. */
static inline vi q8_block(const uint8_t* p, const int8_t* qx, int32_t c) {
#if GK_VNNI
  vi s0 = VI_SET1(c), s1 = VI_ZERO;
  for (int j = 0; j < 8; j += 2) {
    s0 = _mm512_dpbusd_epi32(s0, VI_LOAD(p + j * 64), VI_SET1(xdword(qx + 4 * j)));
    s1 = _mm512_dpbusd_epi32(s1, VI_LOAD(p + (j + 1) * 64), VI_SET1(xdword(qx + 4 * j + 4)));
  }
  return VI_ADD(s0, s1);
#else
  (void)c;
  const vi ones = _mm256_set1_epi16(1);
  vi s0 = VI_ZERO, s1 = VI_ZERO;
  for (int j = 0; j < 8; j += 2) {
    vi w0 = VI_LOAD(p + j * 32), w1 = VI_LOAD(p + (j + 1) * 32);
    vi x0 = VI_SET1(xdword(qx + 4 * j)), x1 = VI_SET1(xdword(qx + 4 * j + 4));
    /* |w| x sign(x, w): unsigned x signed bytes, pairs <= 2 * 127 * 127 */
    vi p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(w0, w0), _mm256_sign_epi8(x0, w0));
    vi p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(w1, w1), _mm256_sign_epi8(x1, w1));
    s0 = VI_ADD(s0, _mm256_madd_epi16(p0, ones));
    s1 = VI_ADD(s1, _mm256_madd_epi16(p1, ones));
  }
  return VI_ADD(s0, s1);
#endif
}

/* Two tiles at once, each its own contiguous stream: one core keeps more cache
 * misses in flight reading two streams than one (on a Zen 4 EPYC, cold: the
 * AVX-512 build 10-25% more GB/s, the AVX2 build's output head ~15%; the
 * AVX2 int4 768 x 3072 layer lost ~10%, which the per-machine choice, timed
 * cold, leaves to the AVX-512 build). */
static void q8_tile2(const scratch_t* s, int64_t M, int64_t K, const uint8_t* wa,
                     const uint8_t* wb, const float* scale, const float* bias, float* y,
                     int64_t N, int64_t na, int64_t nb) {
  int64_t B = K / 32;
  const int64_t block_bytes = 32 * LANES;
  for (int64_t m = 0; m < M; ++m) {
    const int8_t* qx = s->q + m * K;
    const float* d = s->d + m * B;
    const int32_t* c = s->c + m * B;
    vf acc_a = VF_ZERO, acc_b = VF_ZERO;
    for (int64_t b = 0; b < B; ++b) {
      vf db = VF_SET1(d[b]);
      acc_a = VF_FMA(VF_CVT(q8_block(wa + b * block_bytes, qx + b * 32, c[b])), db, acc_a);
      acc_b = VF_FMA(VF_CVT(q8_block(wb + b * block_bytes, qx + b * 32, c[b])), db, acc_b);
    }
    int ra = N - na < LANES ? (int)(N - na) : LANES, rb = N - nb < LANES ? (int)(N - nb) : LANES;
    store_out(acc_a, scale + na, bias ? bias + na : NULL, y + m * N + na, ra);
    store_out(acc_b, scale + nb, bias ? bias + nb : NULL, y + m * N + nb, rb);
  }
}

/* y = x W^T (+ bias) with W packed as above (int8). Returns 0, or -1 when out
 * of memory. K % 32 == 0; packed holds ceil(N / LANES) tiles of K * LANES bytes. */
int gk_q8_linear(const float* x, int64_t M, int64_t K, const uint8_t* packed,
                 const float* scale, const float* bias, float* y, int64_t N,
                 int threads) {
  scratch_t s;
  memset(&s, 0, sizeof s);
  if (quant_rows(x, M, K, 0, &s) != 0) {
    scratch_free(&s);
    return -1;
  }
  int64_t tiles = (N + LANES - 1) / LANES;
  int64_t half = (tiles + 1) / 2; /* tile t is read with tile t + half */
#pragma omp parallel for num_threads(threads) schedule(GK_SCHED) if (threads > 1)
  for (int64_t t = 0; t < half; ++t) {
    if (t + half < tiles) {
      q8_tile2(&s, M, K, packed + t * K * LANES, packed + (t + half) * K * LANES, scale, bias,
               y, N, t * LANES, (t + half) * LANES);
    } else { /* the middle tile of an odd count, paired with itself */
      q8_tile2(&s, M, K, packed + t * K * LANES, packed + t * K * LANES, scale, bias, y, N,
               t * LANES, t * LANES);
    }
  }
  scratch_free(&s);
  return 0;
}

/* ---- int4 weights ------------------------------------------------------------ */

/* The int32 dot of one block of 32 inputs for LANES channels: 4 weight loads. */
static inline vi q4_block(const uint8_t* p, const int8_t* qx) {
#if GK_VNNI
  const vi mask = _mm512_set1_epi8(15);
  vi s0 = VI_ZERO, s1 = VI_ZERO;
  for (int j = 0; j < 4; ++j) {
    vi v = VI_LOAD(p + j * 64);
    vi lo = _mm512_and_si512(v, mask), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    s0 = _mm512_dpbusd_epi32(s0, lo, VI_SET1(xdword(qx + 8 * j)));
    s1 = _mm512_dpbusd_epi32(s1, hi, VI_SET1(xdword(qx + 8 * j + 4)));
  }
  return VI_ADD(s0, s1);
#else
  const vi mask = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  vi s = VI_ZERO;
  for (int j = 0; j < 4; ++j) {
    vi v = VI_LOAD(p + j * 32);
    vi lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
    /* products <= 15 * 127; two pairs plus two pairs fit int16 (<= 7620) */
    vi p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, VI_SET1(xdword(qx + 8 * j))),
                              _mm256_maddubs_epi16(hi, VI_SET1(xdword(qx + 8 * j + 4))));
    s = VI_ADD(s, _mm256_madd_epi16(p16, ones));
  }
  return s;
#endif
}

/* Two tiles at once, each its own contiguous stream (see q8_tile2). */
static void q4_tile2(const scratch_t* s, int64_t M, int64_t K, const uint8_t* wa,
                     const uint8_t* wb, int64_t group, const float* bias, float* y, int64_t N,
                     int64_t na, int64_t nb) {
  int64_t B = K / 32, G = K / group, per = group / 32;
  const int64_t block_bytes = 16 * LANES;
  for (int64_t m = 0; m < M; ++m) {
    const int8_t* qx = s->q + m * K;
    const float* d = s->d + m * B;
    const float* xs = s->xsum + m * G;
    const uint8_t* p = wa;
    const uint8_t* q = wb;
    vf total_a = VF_ZERO, total_b = VF_ZERO;
    for (int64_t g = 0, b = 0; g < G; ++g) {
      vf acc_a = VF_ZERO, acc_b = VF_ZERO;
      for (int64_t e = b + per; b < e; ++b, p += block_bytes, q += block_bytes) {
        vf db = VF_SET1(d[b]);
        acc_a = VF_FMA(VF_CVT(q4_block(p, qx + b * 32)), db, acc_a);
        acc_b = VF_FMA(VF_CVT(q4_block(q, qx + b * 32)), db, acc_b);
      }
      vf xg = VF_SET1(xs[g]);
      total_a = VF_FMA(acc_a, VF_LOAD((const float*)p), total_a);
      total_a = VF_FMA(VF_LOAD((const float*)p + LANES), xg, total_a);
      total_b = VF_FMA(acc_b, VF_LOAD((const float*)q), total_b);
      total_b = VF_FMA(VF_LOAD((const float*)q + LANES), xg, total_b);
      p += 8 * LANES;
      q += 8 * LANES;
    }
    int ra = N - na < LANES ? (int)(N - na) : LANES, rb = N - nb < LANES ? (int)(N - nb) : LANES;
    store_out(total_a, NULL, bias ? bias + na : NULL, y + m * N + na, ra);
    store_out(total_b, NULL, bias ? bias + nb : NULL, y + m * N + nb, rb);
  }
}

/* y = x W^T (+ bias) with int4 W packed as above (scales and zero points in
 * the tiles). Returns 0, or -1 when out of memory. K % group == 0, group % 32
 * == 0. */
int gk_q4_linear(const float* x, int64_t M, int64_t K, const uint8_t* packed,
                 int64_t group, const float* bias, float* y, int64_t N, int threads) {
  scratch_t s;
  memset(&s, 0, sizeof s);
  if (quant_rows(x, M, K, group, &s) != 0) {
    scratch_free(&s);
    return -1;
  }
  int64_t tiles = (N + LANES - 1) / LANES, G = K / group, tile_bytes = (K / 2 + 8 * G) * LANES;
  int64_t half = (tiles + 1) / 2; /* tile t is read with tile t + half */
#pragma omp parallel for num_threads(threads) schedule(GK_SCHED) if (threads > 1)
  for (int64_t t = 0; t < half; ++t) {
    if (t + half < tiles) {
      q4_tile2(&s, M, K, packed + t * tile_bytes, packed + (t + half) * tile_bytes, group,
               bias, y, N, t * LANES, (t + half) * LANES);
    } else { /* the middle tile of an odd count, paired with itself */
      q4_tile2(&s, M, K, packed + t * tile_bytes, packed + t * tile_bytes, group, bias, y, N,
               t * LANES, t * LANES);
    }
  }
  scratch_free(&s);
  return 0;
}

/* Exposed for tests: the activation quantization alone (int8 path's order). */
int gk_quantize_rows(const float* x, int64_t M, int64_t K, int8_t* q, float* d) {
  scratch_t s;
  memset(&s, 0, sizeof s);
  if (quant_rows(x, M, K, 0, &s) != 0) {
    scratch_free(&s);
    return -1;
  }
  memcpy(q, s.q, (size_t)(M * K));
  memcpy(d, s.d, sizeof(float) * (size_t)(M * (K / 32)));
  scratch_free(&s);
  return 0;
}
