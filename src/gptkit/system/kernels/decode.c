/* Decoding on the CPU: attention of one query per row over a KV cache
 * (gk_attend), and a whole decoding step run from a list of operations
 * (gk_step, at the end of this file).
 *
 * out[b, h] = softmax(scale * q[b, h] . K[b, h / group]^T) V[b, h / group]
 *
 * over the S cached keys of row b (those with mask[b, s] != 0 when a mask is
 * given). Keys and values are read where they lie in the cache (float32,
 * bfloat16 or float16; strides in elements, the head dimension contiguous);
 * the `group` query heads that share a key/value head (grouped-query
 * attention) are served one after the other while that head's keys and values
 * are in the cache, never copied per query head. Scores, softmax and sums are
 * float32.
 *
 * Why: a decoding step is one query per row; PyTorch's CPU attention kernel
 * is built for blocks of queries and spent ~100 us per layer on a 124M model's
 * step (12 heads, ~100 cached keys), several times the time its bytes take.
 *
 * Layouts: where each position's heads lie side by side (gptkit's KVCache,
 * (positions, heads, D) per row) one sweep over the positions serves all of a
 * row's heads (attend_heads), so the cache streams as one run per row; a
 * cache with each head's positions together (head-major) is read head by head
 * (attend_head): short runs with gaps between them (the unfilled capacity),
 * which one Zen 4 core read at ~10 GB/s where the sweep reaches ~13 (4 rows
 * x 100 positions of a 124M model's cache, 260 slots; one thread;
 * benchmarks/scripts/cache_layout.py). Both give the same bits.
 *
 * Rows whose leading positions are copies of one computation (beam search's
 * common history, a prompt prefilled once for every row) read those positions
 * once for all rows (the same bits as reading each row's copy).
 *
 * Threads (OpenMP) split the rows (and a row's heads when there are more
 * threads than rows; with a mostly shared prefix, the heads; head-major: the
 * (row, key/value head) pairs). D % 8 == 0.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int gk_abi_version(void) { return 3; }

enum { F32 = 0, BF16 = 1, F16 = 2 };

/* 8 cache values (one dtype) as float32. */
static inline __m256 load8(const void* p, int64_t i, int dtype) {
  if (dtype == F32) return _mm256_loadu_ps((const float*)p + i);
  __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)p + i));
  if (dtype == F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* e^x for x <= 0 (scores minus their maximum): 2^n * p(r), x = n ln2 + r,
 * with the polynomial of Cephes' expf (Moshier); relative error ~1e-7. */
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* q . key for one key of D values. */
static inline float dot(const float* q, const char* key, int64_t D, int dtype) {
  __m256 a = _mm256_setzero_ps();
  for (int64_t i = 0; i < D; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(key, i, dtype), a);
  return hsum8(a);
}

/* The dots of q with 8 keys (key j at k + j * st bytes), as one vector: eight
 * independent accumulators, then one reduction tree for all eight. */
static inline __m256 dot8(const float* q, const char* k, int64_t st, int64_t D, int dtype) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t i = 0; i < D; i += 8) {
    __m256 x = _mm256_loadu_ps(q + i);
    a0 = _mm256_fmadd_ps(x, load8(k, i, dtype), a0);
    a1 = _mm256_fmadd_ps(x, load8(k + st, i, dtype), a1);
    a2 = _mm256_fmadd_ps(x, load8(k + 2 * st, i, dtype), a2);
    a3 = _mm256_fmadd_ps(x, load8(k + 3 * st, i, dtype), a3);
    a4 = _mm256_fmadd_ps(x, load8(k + 4 * st, i, dtype), a4);
    a5 = _mm256_fmadd_ps(x, load8(k + 5 * st, i, dtype), a5);
    a6 = _mm256_fmadd_ps(x, load8(k + 6 * st, i, dtype), a6);
    a7 = _mm256_fmadd_ps(x, load8(k + 7 * st, i, dtype), a7);
  }
  /* [a0 a1 a2 a3] -> per-128-bit-half sums of each, then the halves added */
  __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

/* o[0 .. D) += sum_{t0 <= t < t1} w[t] v_t, each element summed in the order
 * of t: 64 values at a time in 8 registers, then the rest 8 at a time. */
static inline void wsum(const float* w, const char* v, int64_t st, int64_t t0, int64_t t1,
                        int64_t D, int dtype, float* o) {
  int64_t i0 = 0;
  for (; i0 + 64 <= D; i0 += 64) {
    float* oi = o + i0;
    __m256 a0 = _mm256_loadu_ps(oi), a1 = _mm256_loadu_ps(oi + 8);
    __m256 a2 = _mm256_loadu_ps(oi + 16), a3 = _mm256_loadu_ps(oi + 24);
    __m256 a4 = _mm256_loadu_ps(oi + 32), a5 = _mm256_loadu_ps(oi + 40);
    __m256 a6 = _mm256_loadu_ps(oi + 48), a7 = _mm256_loadu_ps(oi + 56);
    for (int64_t t = t0; t < t1; ++t) {
      const char* vt = v + t * st;
      __m256 x = _mm256_set1_ps(w[t]);
      a0 = _mm256_fmadd_ps(x, load8(vt, i0, dtype), a0);
      a1 = _mm256_fmadd_ps(x, load8(vt, i0 + 8, dtype), a1);
      a2 = _mm256_fmadd_ps(x, load8(vt, i0 + 16, dtype), a2);
      a3 = _mm256_fmadd_ps(x, load8(vt, i0 + 24, dtype), a3);
      a4 = _mm256_fmadd_ps(x, load8(vt, i0 + 32, dtype), a4);
      a5 = _mm256_fmadd_ps(x, load8(vt, i0 + 40, dtype), a5);
      a6 = _mm256_fmadd_ps(x, load8(vt, i0 + 48, dtype), a6);
      a7 = _mm256_fmadd_ps(x, load8(vt, i0 + 56, dtype), a7);
    }
    _mm256_storeu_ps(oi, a0), _mm256_storeu_ps(oi + 8, a1), _mm256_storeu_ps(oi + 16, a2);
    _mm256_storeu_ps(oi + 24, a3), _mm256_storeu_ps(oi + 32, a4), _mm256_storeu_ps(oi + 40, a5);
    _mm256_storeu_ps(oi + 48, a6), _mm256_storeu_ps(oi + 56, a7);
  }
  if (i0 < D)
    for (int64_t t = t0; t < t1; ++t) {
      __m256 x = _mm256_set1_ps(w[t]);
      for (int64_t i = i0; i < D; i += 8)
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(x, load8(v + t * st, i, dtype), _mm256_loadu_ps(o + i)));
    }
}

/* Scores w[0..S) (masked ones set to -inf here) become the weights
 * e^(s - max) (0 where masked); returns their sum, or 0 when every key is
 * masked (the sum is >= 1 otherwise: the maximum's own weight is 1). */
static float softmax_weights(float* w, int64_t S, const uint8_t* mask) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  float mx = -INFINITY;
  int64_t t;
  for (t = 0; t < S; ++t) {
    if (mask && !mask[t]) w[t] = -INFINITY;
    mx = w[t] > mx ? w[t] : mx;
  }
  if (mx == -INFINITY) return 0.0f;
  __m256 m8 = _mm256_set1_ps(mx), sum8 = _mm256_setzero_ps();
  for (t = 0; t + 8 <= S; t += 8) {
    __m256 s8 = _mm256_loadu_ps(w + t);
    __m256 p = _mm256_andnot_ps(_mm256_cmp_ps(s8, ninf, _CMP_EQ_OQ), exp8(_mm256_sub_ps(s8, m8)));
    _mm256_storeu_ps(w + t, p);
    sum8 = _mm256_add_ps(sum8, p);
  }
  float sum = hsum8(sum8);
  for (; t < S; ++t) {
    w[t] = w[t] == -INFINITY ? 0.0f : expf(w[t] - mx);
    sum += w[t];
  }
  return sum;
}

/* One (row, key/value head): its `group` query heads at q (head g at g * qh), the
 * head's keys and values at k, v (key s at s * st bytes), output at out
 * (group x D). w: S floats of scratch (scores, then weights). */
static void attend_head(const float* q, int64_t qh, int64_t group, int64_t D, const char* k,
                        const char* v, int64_t st, int dtype, int64_t S,
                        const uint8_t* mask, float scale, float* out, float* w) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t g = 0; g < group; ++g) {
    const float* qg = q + g * qh;
    float* o = out + g * D;
    /* scores; masked ones -inf */
    int64_t t = 0;
    for (; t + 8 <= S; t += 8) {
      if (g == 0) /* the values' lines too, while the keys' arrive: ~5% from DRAM */
        for (int64_t j = 0; j < 8 * st; j += 64) _mm_prefetch(v + t * st + j, _MM_HINT_T0);
      _mm256_storeu_ps(w + t, _mm256_mul_ps(sc, dot8(qg, k + t * st, st, D, dtype)));
    }
    for (; t < S; ++t) w[t] = scale * dot(qg, k + t * st, D, dtype);
    float sum = softmax_weights(w, S, mask);
    if (sum == 0.0f) { /* every key masked: zeros */
      memset(o, 0, sizeof(float) * (size_t)D);
      continue;
    }
    /* out = sum_t w[t] v_t / sum */
    memset(o, 0, sizeof(float) * (size_t)D);
    wsum(w, v, st, 0, S, D, dtype, o);
    __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (int64_t i = 0; i < D; i += 8) _mm256_storeu_ps(o + i, _mm256_mul_ps(inv, _mm256_loadu_ps(o + i)));
  }
}

/* nj key/value heads of R rows whose heads lie side by side at each position
 * (a cache laid out (positions, heads, D): row r's head j's key s at
 * k + r * rb + j * hs + s * st bytes, st >= nj * hs): the same arithmetic as
 * attend_head, per row and head, in the same order, but sweeping the
 * positions once for all the heads, so the cache streams from memory as one
 * run instead of one short run per head. Positions below `shared` hold the
 * same bits in every row (copies of one computation: beam search's common
 * history, a prompt prefilled once); their blocks of 8 are read from one row
 * (at k0, v0: the batch's first, the same for every thread) once for all R
 * rows (the same bits again: each score and each running sum takes the same
 * values in the same order). q: row r's head h at
 * q + r * qb + h * qh; w: R * nj * group * S floats; out: row r's heads at
 * out + r * ob, nj * group x D. */
static void attend_heads(const float* q, int64_t qb, int64_t qh, int64_t R, int64_t group,
                         int64_t D, const char* k, const char* v, const char* k0,
                         const char* v0, int64_t rb, int64_t hs,
                         int64_t st, int dtype, int64_t S, int64_t shared, int64_t nj,
                         const uint8_t* mask, float scale, float* out, int64_t ob, float* w) {
  const __m256 sc = _mm256_set1_ps(scale);
  const int64_t nq = nj * group, S8 = S / 8 * 8;
  const int64_t sh = (shared < S8 ? shared : S8) / 8 * 8;
#define SCORES8(r, base, t, h)                                                                \
  _mm256_storeu_ps(w + ((r) * nq + (h)) * S + (t),                                            \
                   _mm256_mul_ps(sc, dot8(q + (r) * qb + (h) * qh,                            \
                                          (base) + ((h) / group) * hs + (t) * st, st, D, dtype)))
  /* scores, 8 positions of every head at a time (no software prefetch: on a
   * Zen 4 it only lowered the rate the hardware's prefetchers reach); the
   * shared blocks once for every row */
  for (int64_t t = 0; t < sh; t += 8)
    for (int64_t h = 0; h < nq; ++h)
      for (int64_t r = 0; r < R; ++r) SCORES8(r, k0, t, h);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t t = sh; t < S8; t += 8)
      for (int64_t h = 0; h < nq; ++h) SCORES8(r, k + r * rb, t, h);
    for (int64_t t = S8; t < S; ++t)
      for (int64_t h = 0; h < nq; ++h)
        w[(r * nq + h) * S + t] =
            scale * dot(q + r * qb + h * qh, k + r * rb + (h / group) * hs + t * st, D, dtype);
  }
#undef SCORES8
  /* softmax of each row's and head's scores */
  float inv[R * nq];
  for (int64_t i = 0; i < R * nq; ++i) {
    float sum = softmax_weights(w + i * S, S, mask ? mask + (i / nq) * S : NULL);
    inv[i] = sum == 0.0f ? 0.0f : 1.0f / sum; /* 0: every key masked (zeros below) */
  }
  /* out = sum_t w[t] v_t, blocks of positions for every head (as attend_head,
   * each output element summed in the order of t): the shared blocks for
   * every row, then each row's own */
  for (int64_t r = 0; r < R; ++r) memset(out + r * ob, 0, sizeof(float) * (size_t)(nq * D));
  enum { BLOCK = 16 };
  for (int64_t t0 = 0; t0 < sh; t0 += BLOCK) {
    int64_t t1 = t0 + BLOCK < sh ? t0 + BLOCK : sh;
    for (int64_t h = 0; h < nq; ++h)
      for (int64_t r = 0; r < R; ++r)
        wsum(w + (r * nq + h) * S, v0 + (h / group) * hs, st, t0, t1, D, dtype, out + r * ob + h * D);
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t t0 = sh; t0 < S; t0 += BLOCK) {
      int64_t t1 = t0 + BLOCK < S ? t0 + BLOCK : S;
      for (int64_t h = 0; h < nq; ++h)
        wsum(w + (r * nq + h) * S, v + r * rb + (h / group) * hs, st, t0, t1, D, dtype,
             out + r * ob + h * D);
    }
  for (int64_t i = 0; i < R * nq; ++i) {
    __m256 iv = _mm256_set1_ps(inv[i]);
    float* o = out + (i / nq) * ob + (i % nq) * D;
    if (inv[i] == 0.0f) { /* as attend_head: zeros, whatever the values hold */
      memset(o, 0, sizeof(float) * (size_t)D);
      continue;
    }
    for (int64_t j = 0; j < D; j += 8) _mm256_storeu_ps(o + j, _mm256_mul_ps(iv, _mm256_loadu_ps(o + j)));
  }
}

/* q: (B, H, D) float32, element (b, h, i) at b * qb + h * qh + i; k, v: the
 * cache, element (b, j, s, i) at b * sb + j * sh + s * st + i (the same
 * strides for both), H / group heads; mask: (B, S) bytes or NULL; shared:
 * the leading positions whose keys and values are the same bits in every row
 * (0: none known; used where heads lie side by side); out: (B, H, D)
 * float32, contiguous. Returns 0, or -1 when out of memory. */
int gk_attend(const float* q, int64_t qb, int64_t qh, int64_t B, int64_t H, int64_t group, int64_t D,
              const void* k, const void* v, int dtype, int64_t sb, int64_t sh,
              int64_t st, int64_t S, const uint8_t* mask, int64_t shared, float scale,
              float* out, int threads) {
  int64_t kv_heads = H / group;
  size_t esize = dtype == F32 ? 4 : 2;
  /* heads side by side at each position: sweep the positions once per row
   * (or per share of its heads, when there are more threads than rows). With
   * a shared prefix, once per thread's rows, every thread reading the shared
   * positions from the first row (from memory once: the others find them in
   * the last-level cache), or, where most positions are shared, once for all
   * rows, the threads splitting the heads (each thread reads half of each
   * position: ~15% slower than splitting rows at 2 threads on a Zen 4, but
   * each shared byte is read by one thread only) */
  int sweep = sh > 0 && st >= kv_heads * sh;
  int together = sweep && B > 1 && shared >= 8 && B >= threads;
  int by_heads = together && 2 * shared >= S;
  int64_t R = 1, chunks = kv_heads; /* rows per item, shares of the heads */
  if (by_heads)
    R = B, chunks = threads;
  else if (together)
    R = (B + threads - 1) / threads, chunks = 1;
  else if (sweep)
    chunks = B >= threads ? 1 : (threads + B - 1) / B;
  if (chunks > kv_heads) chunks = kv_heads;
  int64_t per_chunk = (kv_heads + chunks - 1) / chunks, items = (B + R - 1) / R * chunks;
  size_t per = sweep ? (size_t)(R * per_chunk * group) * ((size_t)S + 8) : (size_t)S + 8;
  int team = threads > 1 && items > 1 ? threads : 1;
  float* work = (float*)malloc(sizeof(float) * per * (size_t)team);
  if (!work) return -1;
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
  for (int64_t p = 0; p < items; ++p) {
    int64_t b = p / chunks * R, j = (p % chunks) * per_chunk;
    float* w = work + per * (size_t)omp_get_thread_num();
    size_t off = (size_t)(b * sb + j * sh) * esize, off0 = (size_t)(j * sh) * esize;
    if (sweep) {
      int64_t nj = j + per_chunk <= kv_heads ? per_chunk : kv_heads - j;
      if (nj > 0)
        attend_heads(q + b * qb + j * group * qh, qb, qh, B - b < R ? B - b : R, group, D,
                     (const char*)k + off, (const char*)v + off, (const char*)k + off0,
                     (const char*)v + off0, sb * (int64_t)esize, sh * (int64_t)esize,
                     st * (int64_t)esize, dtype, S, together ? shared : 0, nj,
                     mask ? mask + b * S : NULL, scale, out + (b * H + j * group) * D, H * D, w);
    } else {
      attend_head(q + b * qb + j * group * qh, qh, group, D, (const char*)k + off,
                  (const char*)v + off, st * (int64_t)esize, dtype, S,
                  mask ? mask + b * S : NULL, scale, out + (b * H + j * group) * D, w);
    }
  }
  free(work);
  return 0;
}

/* ---- A decoding step as a list of operations -------------------------------
 *
 * gk_step runs one decoding step of a model for `rows` sequences that all add
 * their token at position `pos`, from a list of operations built once per
 * model and cache (gptkit.system.decode_step): the same work as the model's
 * Python forward pass, without its ~100 us of interpreter and dispatch per
 * layer. Activations are rows of float32 or of bfloat16 (word 15 of each
 * operation: the program's activation dtype; a bfloat16 program rounds every
 * result to bfloat16, to nearest even, where PyTorch's bfloat16 forward
 * does); a linear layer is any function with the signature of gptkit's
 * kernels, called through its address. Each operation is 16 int64 words: its
 * kind, then its fields (pointers as integers, floats as the bits of a
 * double).
 */
enum { OP_EMBED, OP_NORM, OP_LINEAR, OP_STORE, OP_ATTEND, OP_ADD, OP_GELU, /* GPT-2 */
       OP_RMSNORM, OP_ROPE, OP_SILU_MUL /* Llama 3, Qwen3 */ };

typedef struct {
  int64_t kind, a[15];
} gk_op;

typedef int (*linear2_fn)(const void*, int64_t, int64_t, int64_t, int64_t, void*, int64_t, int);
typedef int (*linear3_fn)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, void*,
                          int64_t, int);
typedef int (*linear5_fn)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, void*, int64_t, int);

static inline double as_double(int64_t bits) {
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

/* Element i of a row of activations (or parameters) in dtype F32 or BF16. */
static inline float get(const void* p, int64_t i, int dtype) {
  if (dtype == F32) return ((const float*)p)[i];
  uint32_t bits = (uint32_t)((const uint16_t*)p)[i] << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* float32 -> bfloat16, rounded to nearest even (NaN stays NaN), as PyTorch. */
static inline uint16_t to_bf16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

static inline void put(void* p, int64_t i, float v, int dtype) {
  if (dtype == F32)
    ((float*)p)[i] = v;
  else
    ((uint16_t*)p)[i] = to_bf16(v);
}

/* v as dtype would hold it (an intermediate PyTorch rounds in a bf16 model). */
static inline float rnd(float v, int dtype) {
  if (dtype == F32) return v;
  uint16_t h = to_bf16(v);
  return get(&h, 0, dtype);
}

/* y = (x - mean) / sqrt(var + eps) * w + b over each row of D values. */
static void norm_rows(const void* x, void* y, const void* w, const void* b, int64_t rows,
                      int64_t D, float eps, int dt) {
  for (int64_t r = 0; r < rows; ++r) {
    float mean = 0.0f, var = 0.0f;
    for (int64_t i = 0; i < D; ++i) mean += get(x, r * D + i, dt);
    mean /= (float)D;
    for (int64_t i = 0; i < D; ++i) {
      float c = get(x, r * D + i, dt) - mean;
      var += c * c;
    }
    float rstd = 1.0f / sqrtf(var / (float)D + eps);
    for (int64_t i = 0; i < D; ++i)
      put(y, r * D + i, (get(x, r * D + i, dt) - mean) * rstd * get(w, i, dt) + get(b, i, dt), dt);
  }
}

/* RMSNorm (Llama): y = w * (x / sqrt(mean(x^2) + eps)) over n vectors of D;
 * the normalised x is rounded to the dtype before the weight multiplies it. */
static void rms_rows(const void* x, void* y, const void* w, int64_t n, int64_t D, float eps,
                     int dt) {
  for (int64_t r = 0; r < n; ++r) {
    float ss = 0.0f;
    for (int64_t i = 0; i < D; ++i) {
      float v = get(x, r * D + i, dt);
      ss += v * v;
    }
    float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (int64_t i = 0; i < D; ++i)
      put(y, r * D + i, get(w, i, dt) * rnd(get(x, r * D + i, dt) * inv, dt), dt);
  }
}

/* Rotary embedding at position pos of n head vectors of hd values (the
 * halves convention): x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, each
 * product rounded to the dtype (as the cos and sin tables are). */
static void rope(void* x, int64_t n, int64_t hd, const float* inv_freq, int64_t pos, int dt) {
  int64_t half = hd / 2;
  for (int64_t j = 0; j < half; ++j) {
    float angle = (float)pos * inv_freq[j];
    float c = rnd(cosf(angle), dt), s = rnd(sinf(angle), dt);
    for (int64_t r = 0; r < n; ++r) {
      float x1 = get(x, r * hd + j, dt), x2 = get(x, r * hd + j + half, dt);
      put(x, r * hd + j, rnd(x1 * c, dt) - rnd(x2 * s, dt), dt);
      put(x, r * hd + j + half, rnd(x2 * c, dt) + rnd(x1 * s, dt), dt);
    }
  }
}

/* GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(c (x + 0.044715 x^3))),
 * tanh(u) = sign(u) (1 - e) / (1 + e) with e = e^(-2|u|) <= 1. */
static inline __m256 gelu8(__m256 v) {
  const __m256 c = _mm256_set1_ps(0.7978845608028654f), k = _mm256_set1_ps(0.044715f);
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  const __m256 sign = _mm256_set1_ps(-0.0f), m2 = _mm256_set1_ps(-2.0f);
  __m256 u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(k, v), _mm256_mul_ps(v, v), v));
  __m256 e = exp8(_mm256_mul_ps(m2, _mm256_andnot_ps(sign, u)));
  __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
  t = _mm256_or_ps(t, _mm256_and_ps(sign, u));
  return _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, t));
}

static void gelu(void* x, int64_t n, int dt) {
  float v[8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    if (dt == F32) {
      _mm256_storeu_ps((float*)x + i, gelu8(_mm256_loadu_ps((const float*)x + i)));
      continue;
    }
    _mm256_storeu_ps(v, gelu8(load8(x, i, BF16)));
    for (int j = 0; j < 8; ++j) put(x, i + j, v[j], dt);
  }
  for (; i < n; ++i) {
    float y = get(x, i, dt);
    put(x, i, 0.5f * y * (1.0f + tanhf(0.7978845608028654f * (y + 0.044715f * y * y * y))), dt);
  }
}

static int linear(const gk_op* op, int64_t rows, void* out, int threads) {
  const int64_t* a = op->a;
  const void* x = (const void*)a[0];
  void* y = a[1] ? (void*)a[1] : out;
  int64_t K = a[2], N = a[3];
  switch (a[5]) {
    case 2: return ((linear2_fn)a[4])(x, rows, K, a[6], a[7], y, N, threads);
    case 3: return ((linear3_fn)a[4])(x, rows, K, a[6], a[7], a[8], y, N, threads);
    case 5: return ((linear5_fn)a[4])(x, rows, K, a[6], a[7], a[8], a[9], a[10], y, N, threads);
  }
  return -3;
}

/* q (rows, H * hd) in dt; keys and values in the cache's dtype; the output
 * (rows, H * hd) in dt. A bfloat16 program attends on float32 copies of its
 * queries (scratch q32, o32), as PyTorch's forward does. */
static int attend_op(const int64_t* a, int64_t rows, int64_t pos, int64_t shared, int threads,
                     int dt) {
  int64_t H = a[6], hd = a[8], n = rows * H * hd;
  const float* q = (const float*)a[0];
  float* o = (float*)a[9];
  if (dt != F32) {
    for (int64_t i = 0; i < n; ++i) ((float*)a[11])[i] = get((const void*)a[0], i, dt);
    q = (const float*)a[11], o = (float*)a[12];
  }
  int status = gk_attend(q, H * hd, hd, rows, H, a[7], hd, (const void*)a[1], (const void*)a[2],
                         (int)a[13], a[3], a[4], a[5], pos + 1, NULL, shared, (float)as_double(a[10]),
                         o, threads);
  if (dt != F32)
    for (int64_t i = 0; i < n; ++i) put((void*)a[9], i, o[i], dt);
  return status;
}

/* One decoding step: `tokens` (rows) at position `pos` of every row, whose
 * first `shared` positions hold the same keys and values in every row (see
 * attend_heads; 0: none known); the operation whose output is 0 writes to
 * `out` (the logits). Returns 0, -1 out
 * of memory, -2 a token or position outside the embeddings (nothing written),
 * -3 a malformed operation. */
int gk_step(const gk_op* ops, int64_t n_ops, const int64_t* tokens, int64_t rows, int64_t pos,
            int64_t shared, void* out, int threads) {
  for (int64_t o = 0; o < n_ops; ++o) {
    const gk_op* op = ops + o;
    const int64_t* a = op->a;
    int dt = (int)a[14], status = 0;
    if (dt != F32 && dt != BF16) return -3;
    size_t es = dt == F32 ? 4 : 2;
    switch (op->kind) {
      case OP_EMBED: { /* tok, pos table (0: none), dst, D, vocab, positions */
        int64_t D = a[3];
        if (pos < 0 || pos >= a[5]) return -2;
        for (int64_t r = 0; r < rows; ++r)
          if (tokens[r] < 0 || tokens[r] >= a[4]) return -2;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t i = 0; i < D; ++i) {
            float t = get((const void*)a[0], tokens[r] * D + i, dt);
            if (a[1]) t += get((const void*)a[1], pos * D + i, dt);
            put((void*)a[2], r * D + i, t, dt);
          }
        break;
      }
      case OP_NORM: /* src, dst, weight, bias, D, eps */
        norm_rows((const void*)a[0], (void*)a[1], (const void*)a[2], (const void*)a[3], rows, a[4],
                  (float)as_double(a[5]), dt);
        break;
      case OP_LINEAR: /* src, dst (0: out), K, N, function, extras, extra... */
        status = linear(op, rows, out, threads);
        break;
      case OP_STORE: { /* src (rows, H * hd), cache, row/head/slot strides, H, hd */
        char* base = (char*)a[1];
        int64_t H = a[5], hd = a[6];
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t h = 0; h < H; ++h)
            memcpy(base + (r * a[2] + h * a[3] + pos * a[4]) * es,
                   (const char*)a[0] + (r * H + h) * hd * es, es * (size_t)hd);
        break;
      }
      case OP_ATTEND: /* q, keys, values, strides, H, group, hd, dst, scale, q32, o32, cache dtype */
        status = attend_op(a, rows, pos, shared, threads, dt);
        break;
      case OP_ADD: /* dst += src, D values per row */
        for (int64_t i = 0; i < rows * a[2]; ++i)
          put((void*)a[0], i, get((const void*)a[0], i, dt) + get((const void*)a[1], i, dt), dt);
        break;
      case OP_GELU: /* buffer, D values per row */
        gelu((void*)a[0], rows * a[1], dt);
        break;
      case OP_RMSNORM: /* src, dst, weight, D, eps, vectors per row */
        rms_rows((const void*)a[0], (void*)a[1], (const void*)a[2], rows * a[5], a[3],
                 (float)as_double(a[4]), dt);
        break;
      case OP_ROPE: /* buffer (rows, heads * hd), heads, hd, inverse frequencies (hd / 2) */
        rope((void*)a[0], rows * a[1], a[2], (const float*)a[3], pos, dt);
        break;
      case OP_SILU_MUL: /* gate = silu(gate) * up, D values per row */
        for (int64_t i = 0; i < rows * a[2]; ++i) {
          float g = get((const void*)a[0], i, dt);
          put((void*)a[0], i, rnd(g / (1.0f + expf(-g)), dt) * get((const void*)a[1], i, dt), dt);
        }
        break;
      default:
        return -3;
    }
    if (status) return status;
  }
  return 0;
}
