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
 * (OpenMP) split the output channels, each reading two tiles at once for up
 * to 4 activation rows at a time.
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

#define ROWS 4 /* activation rows sharing each weight load */
#define INLINE static inline __attribute__((always_inline))

/* TILE(s, m0, R, ...) for the rows in groups of up to ROWS, R a constant in
 * each call so that the loops over a group's rows unroll. */
#define ROW_GROUPS(M, TILE, ...)                   \
  for (int64_t m0 = 0; m0 < (M); m0 += ROWS) {     \
    int64_t left = (M) - m0;                       \
    if (left >= 4) TILE(s, m0, 4, __VA_ARGS__);    \
    else if (left == 3) TILE(s, m0, 3, __VA_ARGS__); \
    else if (left == 2) TILE(s, m0, 2, __VA_ARGS__); \
    else TILE(s, m0, 1, __VA_ARGS__);              \
  }

/* One block of 32 inputs of two int8 tiles (8 weight loads each, shared by
 * the R rows m0..m0+R-1): acc_a[r] / acc_b[r] += float(int32 dot) * d[r, b].
 * Each row's arithmetic is the one-row kernel's (int32 sums are exact in any
 * order), so a row's outputs do not depend on the rows beside it. */
#if GK_VNNI
INLINE void q8_rows2(const uint8_t* pa, const uint8_t* pb, const scratch_t* s, int64_t m0,
                     const int R, int64_t K, int64_t b, vf* acc_a, vf* acc_b) {
  const int64_t B = K / 32;
  vi wa[8], wb[8]; /* AVX-512 has the registers for both tiles */
  for (int j = 0; j < 8; ++j) wa[j] = VI_LOAD(pa + j * 64), wb[j] = VI_LOAD(pb + j * 64);
  for (int r = 0; r < R; ++r) {
    const int8_t* qx = s->q + (m0 + r) * K + b * 32;
    vi a0 = VI_SET1(s->c[(m0 + r) * B + b]), a1 = VI_ZERO, b0 = a0, b1 = VI_ZERO;
    for (int j = 0; j < 8; j += 2) {
      vi x0 = VI_SET1(xdword(qx + 4 * j)), x1 = VI_SET1(xdword(qx + 4 * j + 4));
      a0 = _mm512_dpbusd_epi32(a0, wa[j], x0);
      b0 = _mm512_dpbusd_epi32(b0, wb[j], x0);
      a1 = _mm512_dpbusd_epi32(a1, wa[j + 1], x1);
      b1 = _mm512_dpbusd_epi32(b1, wb[j + 1], x1);
    }
    vf d = VF_SET1(s->d[(m0 + r) * B + b]);
    acc_a[r] = VF_FMA(VF_CVT(VI_ADD(a0, a1)), d, acc_a[r]);
    acc_b[r] = VF_FMA(VF_CVT(VI_ADD(b0, b1)), d, acc_b[r]);
  }
}
#else
/* One tile at a time (AVX2 has 16 registers). */
INLINE void q8_rows(const uint8_t* p, const scratch_t* s, int64_t m0, const int R, int64_t K,
                    int64_t b, vf* acc) {
  const int64_t B = K / 32;
  const vi ones = _mm256_set1_epi16(1);
  vi w[8], a[8];
  for (int j = 0; j < 8; ++j) {
    w[j] = VI_LOAD(p + j * 32);
    a[j] = _mm256_sign_epi8(w[j], w[j]);
  }
  for (int r = 0; r < R; ++r) {
    const int8_t* qx = s->q + (m0 + r) * K + b * 32;
    vi s0 = VI_ZERO, s1 = VI_ZERO;
    for (int j = 0; j < 8; j += 2) {
      /* |w| x sign(x, w): unsigned x signed bytes, pairs <= 2 * 127 * 127 */
      vi p0 = _mm256_maddubs_epi16(a[j], _mm256_sign_epi8(VI_SET1(xdword(qx + 4 * j)), w[j]));
      vi p1 = _mm256_maddubs_epi16(a[j + 1],
                                   _mm256_sign_epi8(VI_SET1(xdword(qx + 4 * j + 4)), w[j + 1]));
      s0 = VI_ADD(s0, _mm256_madd_epi16(p0, ones));
      s1 = VI_ADD(s1, _mm256_madd_epi16(p1, ones));
    }
    acc[r] = VF_FMA(VF_CVT(VI_ADD(s0, s1)), VF_SET1(s->d[(m0 + r) * B + b]), acc[r]);
  }
}
#endif

/* Stores each row's LANES outputs of the two tiles. */
INLINE void store_rows(const vf* acc_a, const vf* acc_b, const int R, int64_t m0,
                       const float* scale, const float* bias, float* y, int64_t N, int64_t na,
                       int64_t nb) {
  int ra = N - na < LANES ? (int)(N - na) : LANES, rb = N - nb < LANES ? (int)(N - nb) : LANES;
  for (int r = 0; r < R; ++r) {
    store_out(acc_a[r], scale ? scale + na : NULL, bias ? bias + na : NULL, y + (m0 + r) * N + na,
              ra);
    store_out(acc_b[r], scale ? scale + nb : NULL, bias ? bias + nb : NULL, y + (m0 + r) * N + nb,
              rb);
  }
}

/* Two tiles at once, each its own contiguous stream: one core keeps more cache
 * misses in flight reading two streams than one (on a Zen 4 EPYC, cold: the
 * AVX-512 build 10-25% more GB/s, the AVX2 build's output head ~15%; the
 * AVX2 int4 768 x 3072 layer lost ~10%, which the per-machine choice, timed
 * cold, leaves to the AVX-512 build). Up to ROWS rows per pass over the
 * tiles, each weight load serving them all (beam search, verification,
 * batches): a 124M model's int8 step of 4 rows took 2.7x one row's time with
 * a pass per row, 1.6x so (int4 1.4x; AVX-512 build, Zen 4, 1 thread). */
INLINE void q8_tile2_rows(const scratch_t* s, int64_t m0, const int R, int64_t K,
                          const uint8_t* wa, const uint8_t* wb, const float* scale,
                          const float* bias, float* y, int64_t N, int64_t na, int64_t nb) {
  const int64_t block_bytes = 32 * LANES;
  vf acc_a[ROWS], acc_b[ROWS];
  for (int r = 0; r < R; ++r) acc_a[r] = acc_b[r] = VF_ZERO;
  for (int64_t b = 0; b < K / 32; ++b) {
#if GK_VNNI
    q8_rows2(wa + b * block_bytes, wb + b * block_bytes, s, m0, R, K, b, acc_a, acc_b);
#else
    q8_rows(wa + b * block_bytes, s, m0, R, K, b, acc_a);
    q8_rows(wb + b * block_bytes, s, m0, R, K, b, acc_b);
#endif
  }
  store_rows(acc_a, acc_b, R, m0, scale, bias, y, N, na, nb);
}

static void q8_tile2(const scratch_t* s, int64_t M, int64_t K, const uint8_t* wa,
                     const uint8_t* wb, const float* scale, const float* bias, float* y,
                     int64_t N, int64_t na, int64_t nb) {
  ROW_GROUPS(M, q8_tile2_rows, K, wa, wb, scale, bias, y, N, na, nb)
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

/* One block of 32 inputs of two int4 tiles (4 weight loads each, their
 * nibbles split once for the R rows): acc_a[r] / acc_b[r] += float(int32 dot)
 * * d[r, b]; each broadcast activation serves both tiles. */
INLINE void q4_rows2(const uint8_t* pa, const uint8_t* pb, const scratch_t* s, int64_t m0,
                     const int R, int64_t K, int64_t b, vf* acc_a, vf* acc_b) {
  const int64_t B = K / 32;
#if GK_VNNI
  const vi mask = _mm512_set1_epi8(15);
  vi la[4], ha[4], lb[4], hb[4];
  for (int j = 0; j < 4; ++j) {
    vi v = VI_LOAD(pa + j * 64), u = VI_LOAD(pb + j * 64);
    la[j] = _mm512_and_si512(v, mask);
    ha[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    lb[j] = _mm512_and_si512(u, mask);
    hb[j] = _mm512_and_si512(_mm512_srli_epi16(u, 4), mask);
  }
  for (int r = 0; r < R; ++r) {
    const int8_t* qx = s->q + (m0 + r) * K + b * 32;
    vi a0 = VI_ZERO, a1 = VI_ZERO, b0 = VI_ZERO, b1 = VI_ZERO;
    for (int j = 0; j < 4; ++j) {
      vi x0 = VI_SET1(xdword(qx + 8 * j)), x1 = VI_SET1(xdword(qx + 8 * j + 4));
      a0 = _mm512_dpbusd_epi32(a0, la[j], x0);
      b0 = _mm512_dpbusd_epi32(b0, lb[j], x0);
      a1 = _mm512_dpbusd_epi32(a1, ha[j], x1);
      b1 = _mm512_dpbusd_epi32(b1, hb[j], x1);
    }
    vf d = VF_SET1(s->d[(m0 + r) * B + b]);
    acc_a[r] = VF_FMA(VF_CVT(VI_ADD(a0, a1)), d, acc_a[r]);
    acc_b[r] = VF_FMA(VF_CVT(VI_ADD(b0, b1)), d, acc_b[r]);
  }
#else /* one tile at a time (AVX2 has 16 registers) */
  const vi mask = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  for (int t = 0; t < 2; ++t) {
    const uint8_t* p = t ? pb : pa;
    vf* acc = t ? acc_b : acc_a;
    vi lo[4], hi[4];
    for (int j = 0; j < 4; ++j) {
      vi v = VI_LOAD(p + j * 32);
      lo[j] = _mm256_and_si256(v, mask);
      hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
    }
    for (int r = 0; r < R; ++r) {
      const int8_t* qx = s->q + (m0 + r) * K + b * 32;
      vi sum = VI_ZERO;
      for (int j = 0; j < 4; ++j) {
        /* products <= 15 * 127; two pairs plus two pairs fit int16 (<= 7620) */
        vi p16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo[j], VI_SET1(xdword(qx + 8 * j))),
                                  _mm256_maddubs_epi16(hi[j], VI_SET1(xdword(qx + 8 * j + 4))));
        sum = VI_ADD(sum, _mm256_madd_epi16(p16, ones));
      }
      acc[r] = VF_FMA(VF_CVT(sum), VF_SET1(s->d[(m0 + r) * B + b]), acc[r]);
    }
  }
#endif
}

/* Two tiles at once, up to ROWS rows per pass (see q8_tile2_rows); per group,
 * total[r] += acc[r] * scale + zero * xsum[r, g]. */
INLINE void q4_tile2_rows(const scratch_t* s, int64_t m0, const int R, int64_t K,
                          const uint8_t* wa, const uint8_t* wb, int64_t group,
                          const float* bias, float* y, int64_t N, int64_t na, int64_t nb) {
  const int64_t G = K / group, per = group / 32, block_bytes = 16 * LANES;
  const uint8_t* p = wa;
  const uint8_t* q = wb;
  vf total_a[ROWS], total_b[ROWS];
  for (int r = 0; r < R; ++r) total_a[r] = total_b[r] = VF_ZERO;
  for (int64_t g = 0, b = 0; g < G; ++g) {
    vf acc_a[ROWS], acc_b[ROWS];
    for (int r = 0; r < R; ++r) acc_a[r] = acc_b[r] = VF_ZERO;
    for (int64_t e = b + per; b < e; ++b, p += block_bytes, q += block_bytes) {
      q4_rows2(p, q, s, m0, R, K, b, acc_a, acc_b);
    }
    vf scale_a = VF_LOAD((const float*)p), zero_a = VF_LOAD((const float*)p + LANES);
    vf scale_b = VF_LOAD((const float*)q), zero_b = VF_LOAD((const float*)q + LANES);
    for (int r = 0; r < R; ++r) {
      vf xg = VF_SET1(s->xsum[(m0 + r) * G + g]);
      total_a[r] = VF_FMA(zero_a, xg, VF_FMA(acc_a[r], scale_a, total_a[r]));
      total_b[r] = VF_FMA(zero_b, xg, VF_FMA(acc_b[r], scale_b, total_b[r]));
    }
    p += 8 * LANES;
    q += 8 * LANES;
  }
  store_rows(total_a, total_b, R, m0, NULL, bias, y, N, na, nb);
}

static void q4_tile2(const scratch_t* s, int64_t M, int64_t K, const uint8_t* wa,
                     const uint8_t* wb, int64_t group, const float* bias, float* y, int64_t N,
                     int64_t na, int64_t nb) {
  ROW_GROUPS(M, q4_tile2_rows, K, wa, wb, group, bias, y, N, na, nb)
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
