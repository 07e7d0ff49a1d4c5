/* Sampling a token on the CPU: the nucleus (top-p) threshold without sorting
 * the vocabulary, and torch.multinomial(probs, 1)'s draw without its
 * per-token logarithms. Both give PyTorch's results bit for bit (see
 * gptkit/system/sampling.py for the proofs' outline and the checks).
 *
 * gk_nucleus: PyTorch-style top-p sorts the probabilities (descending), takes
 * cumsum (float32 outputs of a float64 running sum), keeps position i while
 * float32(cumsum_i - d_i) < p, and returns d[kept - 1]. Summing float32
 * values >= 2^-29 in float64 is exact below 2 (every partial sum is a multiple
 * of 2^-52), so the running sum at any position depends only on the set of
 * larger values, not on their order: buckets of values (by their top 16 bits)
 * are summed whole (as integers in units of 2^-52), and only the buckets where
 * the running sum crosses p are sorted. A value below 2^-29 on the way returns
 * 2 (the caller sorts).
 *
 * gk_multinomial: torch.multinomial(probs, 1) on the CPU draws q ~ Exp(1) per
 * entry (float64 from the generator's Mersenne Twister: u = 53 bits of two
 * 32-bit words / 2^53, q = -log1p(-u), stored as float32) and returns
 * argmax(probs / q) (float32 division; the first maximum; a NaN wins). The
 * twister's words are needed for every entry; the logarithm only where the
 * entry can win: q >= u, so probs / q <= probs / u, and an entry whose bound
 * is below the best exact ratio so far is skipped.
 *
 * gk_beam_top: beam search's candidates, torch.topk((logprobs +
 * running[:, None]).view(-1), k) without the (rows x V) sum: the same float32
 * additions, one pass keeping the k largest (descending; of equal values the
 * lower index first). A NaN returns 1 (the caller asks PyTorch).
 */
#include <math.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int gk_abi_version(void) { return 2; }

/* A float's bits, read through a type that may alias it. */
typedef uint32_t __attribute__((__may_alias__)) bits32;

/* ---- nucleus ------------------------------------------------------------ */

static int desc_float(const void* a, const void* b) {
  float x = *(const float*)a, y = *(const float*)b;
  return (x < y) - (x > y);
}

/* The values of `probs` in bucket `key` (top 16 bits), sorted descending. */
static int64_t gather(const float* probs, int64_t n, uint32_t key, float* out) {
  const bits32* bits = (const bits32*)probs;
  int64_t c = 0, i = 0;
#ifdef __AVX2__
  const __m256i want = _mm256_set1_epi32((int32_t)key);
  for (; i + 8 <= n; i += 8) {
    __m256i k = _mm256_srli_epi32(_mm256_loadu_si256((const __m256i*)(bits + i)), 16);
    int hits = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, want)));
    while (hits) {
      int l = __builtin_ctz(hits);
      out[c++] = probs[i + l];
      hits &= hits - 1;
    }
  }
#endif
  for (; i < n; i++)
    if ((bits[i] >> 16) == key) out[c++] = probs[i];
  qsort(out, (size_t)c, sizeof(float), desc_float);
  return c;
}

#define EXACT_MIN_BITS (((uint32_t)(127 - 29)) << 23) /* 2^-29 */
#define TWO_BITS (((uint32_t)(127 + 1)) << 23)         /* 2.0 */
#define UNIT 2.220446049250313e-16                     /* 2^-52 */

/* A float32 >= 2^-29 and < 2 as an integer count of 2^-52 (exact, < 2^53);
 * smaller values as 0 (the sums they enter are not used). */
static inline uint64_t units(uint32_t bits) {
  uint64_t m = (bits & 0x7fffffu) | 0x800000u;
  return bits >= EXACT_MIN_BITS ? m << ((bits >> 23) - 98) : 0;
}

/* 0: *threshold set and, where `logits` is given, out = logits with -inf
 * where probs < threshold; 1: a value is negative, NaN or infinite; 2: the
 * nucleus reaches values below 2^-29, or values reach 2 (sort instead);
 * -1: out of memory. */
int gk_nucleus(const float* probs, int64_t n, float p, float* threshold,
               const float* logits, float* out) {
  if (n <= 0) return 1;
  /* Non-negative finite floats are the bit patterns below +inf's, and order
   * as their bits do (-0.0 and NaN land above: refused). */
  const bits32* bits = (const bits32*)probs;
  uint32_t lo = UINT32_MAX, hi = 0;
  for (int64_t i = 0; i < n; i++) {
    lo = bits[i] < lo ? bits[i] : lo;
    hi = bits[i] > hi ? bits[i] : hi;
  }
  if (hi >= 0x7f800000u) return 1;
  if (hi >= TWO_BITS) return 2;
  lo >>= 16, hi >>= 16;
  int64_t span = (int64_t)hi - lo + 1;
  int32_t* count = calloc((size_t)span, sizeof(int32_t));
  uint64_t* sum = calloc((size_t)span, sizeof(uint64_t)); /* in 2^-52 */
  float* sorted = malloc((size_t)n * sizeof(float));
  if (!count || !sum || !sorted) {
    free(count), free(sum), free(sorted);
    return -1;
  }
  for (int64_t i = 0; i < n; i++) {
    uint32_t k = (bits[i] >> 16) - lo;
    count[k] += 1;
    sum[k] += units(bits[i]);
  }
  /* Walk the buckets from the largest values: a bucket whose running sums
   * all lie below p (above p) by more than float32 rounding can move them is
   * kept (dropped) whole; the others are sorted and tested one by one. The
   * sums are exact while every value summed is >= 2^-29 and they stay below
   * 2 (partial sums of such floats are multiples of 2^-52). */
  const double margin = 1e-6, P = (double)p;
  uint64_t above = 0;
  int64_t kept = 0, status = 0, sorted_bucket = -1;
  for (int64_t b = span - 1; b >= 0; b--) {
    if (count[b] == 0) continue;
    if ((double)above * UNIT >= P + margin) break;
    if ((((uint32_t)b + lo) << 16) < EXACT_MIN_BITS || above + sum[b] >= (2ull << 52)) {
      status = 2;
      break;
    }
    if ((double)(above + sum[b]) * UNIT < P - margin) {
      kept += count[b];
    } else {
      int64_t c = gather(probs, n, (uint32_t)b + lo, sorted);
      sorted_bucket = b;
      double running = (double)above * UNIT;
      for (int64_t j = 0; j < c; j++) {
        running += (double)sorted[j];
        float before = (float)running - sorted[j];
        kept += before < p;
      }
    }
    above += sum[b];
  }
  if (status == 0) {
    /* The kept-th largest value (at least the largest). */
    int64_t rank = (kept < 1 ? 1 : kept) - 1, seen = 0;
    for (int64_t b = span - 1; b >= 0; b--) {
      if (seen + count[b] > rank) {
        if (b != sorted_bucket) gather(probs, n, (uint32_t)b + lo, sorted);
        *threshold = sorted[rank - seen];
        break;
      }
      seen += count[b];
    }
  }
  free(count), free(sum), free(sorted);
  if (status == 0 && logits) {
    const float t = *threshold;
    for (int64_t i = 0; i < n; i++) out[i] = probs[i] < t ? -INFINITY : logits[i];
  }
  return (int)status;
}

/* ---- multinomial -------------------------------------------------------- */

enum { MT_N = 624, MT_M = 397 };

typedef struct {
  uint32_t* key;  /* MT_N words */
  int32_t left;   /* PyTorch's count-down: a twist when it reaches 0 */
  int64_t next;   /* index of the next word; left + next == MT_N + 1 */
} Twister;

static inline uint32_t mix(uint32_t u, uint32_t v) {
  return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((0u - (v & 1u)) & 0x9908b0dfu);
}

static void twist(uint32_t* s) {
  int j;
  for (j = 0; j < MT_N - MT_M; j++) s[j] = s[j + MT_M] ^ mix(s[j], s[j + 1]);
  for (; j < MT_N - 1; j++) s[j] = s[j + MT_M - MT_N] ^ mix(s[j], s[j + 1]);
  s[MT_N - 1] = s[MT_M - 1] ^ mix(s[MT_N - 1], s[0]);
}

/* The next `count` words of the twister, as PyTorch's mt19937 gives them. */
static void words(Twister* t, uint32_t* out, int64_t count) {
  while (count > 0) {
    if (t->left == 1) { /* this word's count-down reaches 0: twist */
      twist(t->key);
      t->left = MT_N + 1;
      t->next = 0;
    }
    int64_t take = t->left - 1 < count ? t->left - 1 : count;
    const uint32_t* s = t->key + t->next;
    for (int64_t i = 0; i < take; i++) {
      uint32_t y = s[i];
      y ^= y >> 11;
      y ^= (y << 7) & 0x9d2c5680u;
      y ^= (y << 15) & 0xefc60000u;
      out[i] = y ^ (y >> 18);
    }
    out += take, count -= take;
    t->next += take;
    t->left -= (int32_t)take;
  }
}

/* Entry i's uniform: 53 bits of its two words (the first one high) / 2^53;
 * its lower bound from the first word's 21 bits alone. */
static inline double uniform(const uint32_t* w, int64_t i) {
  uint64_t bits = (((uint64_t)w[2 * i] << 32) | w[2 * i + 1]) & ((1ull << 53) - 1);
  return (double)bits * (1.0 / 9007199254740992.0);
}
#define HIGH21 0x1fffffu
#ifdef __AVX2__
/* The first words of 8 entries' pairs (w[0], w[2], ..., w[14]). */
static inline __m256i first_words(const uint32_t* w) {
  const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  __m256i a = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i*)w), evens);
  __m256i b = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i*)(w + 8)), evens);
  return _mm256_permute2x128_si256(a, b, 0x20);
}
#endif
#define LOW_SCALE (1.0f / 2097152.0f) /* 2^-21 */

/* PyTorch's exponential<double>(1) from a uniform, stored as float32. */
static inline float exponential(double u) { return (float)(-1.0 * log1p(-u)); }

/* An entry with the largest bound x / u_low among those with x > 0. */
static int64_t largest_bound(const float* x, const uint32_t* w, int64_t n) {
  float best = -1.0f;
  int64_t at = 0, i = 0;
#ifdef __AVX2__
  __m256 acc = _mm256_set1_ps(-1.0f);
  __m256i where = _mm256_setzero_si256(), index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i high = _mm256_set1_epi32(HIGH21), eight = _mm256_set1_epi32(8);
  for (; i + 8 <= n; i += 8) {
    __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(first_words(w + 2 * i), high)),
                             _mm256_set1_ps(LOW_SCALE));
    __m256 xs = _mm256_loadu_ps(x + i);
    __m256 r = _mm256_div_ps(xs, u); /* x > 0, u = 0: inf; x = 0, u = 0: NaN */
    r = _mm256_and_ps(r, _mm256_cmp_ps(xs, _mm256_setzero_ps(), _CMP_GT_OQ)); /* NaN -> 0 */
    __m256 more = _mm256_cmp_ps(r, acc, _CMP_GT_OQ);
    acc = _mm256_blendv_ps(acc, r, more);
    where = _mm256_blendv_epi8(where, index, _mm256_castps_si256(more));
    index = _mm256_add_epi32(index, eight);
  }
  float lanes[8];
  int32_t at8[8];
  _mm256_storeu_ps(lanes, acc);
  _mm256_storeu_si256((__m256i*)at8, where);
  for (int l = 0; l < 8; l++)
    if (lanes[l] > best) best = lanes[l], at = at8[l];
#endif
  for (; i < n; i++) {
    if (!(x[i] > 0.0f)) continue;
    float r = x[i] / ((float)(w[2 * i] & HIGH21) * LOW_SCALE);
    if (r > best) best = r, at = i;
  }
  return at;
}

/* Bit l set: entry l of the 8 at x may reach `best` (its bound, with a margin
 * far above the float32 rounding of a ratio, is not below it) or has a zero
 * bound. Entries with x = 0 only matter there (a NaN ratio). */
#ifdef __AVX2__
static inline int may_reach(const float* x, const uint32_t* w, float best) {
  __m256i h = _mm256_and_si256(first_words(w), _mm256_set1_epi32(HIGH21));
  __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(h), _mm256_set1_ps(LOW_SCALE));
  __m256 xs = _mm256_mul_ps(_mm256_loadu_ps(x), _mm256_set1_ps(1.0f + 1e-5f));
  __m256 reach = _mm256_cmp_ps(xs, _mm256_mul_ps(_mm256_set1_ps(best), u), _CMP_GE_OQ);
  __m256 zero = _mm256_castsi256_ps(_mm256_cmpeq_epi32(h, _mm256_setzero_si256()));
  return _mm256_movemask_ps(_mm256_or_ps(reach, zero));
}
#endif

enum { CHUNK = 4096 }; /* entries per block of words (32 KiB) */

typedef struct {
  float best;
  int64_t at, nan_at;
} Draw;

/* Entry i (offset `base`) against the draw so far. */
static inline void consider(Draw* d, const float* x, const uint32_t* w, int64_t i, int64_t base) {
  double u = uniform(w, i);
  if (!(x[i] > 0.0f)) {
    if (u == 0.0 && d->nan_at < 0) d->nan_at = base + i; /* 0 / -log1p(-0) */
    return;
  }
  float ratio = x[i] / exponential(u);
  if (d->at < 0 || ratio > d->best) d->best = ratio, d->at = base + i;
}

/* 0: out[r] set for each row; 1: a value is negative, NaN or infinite (or
 * -0.0), or a row has no positive one (the twister is untouched). */
int gk_multinomial(const float* probs, int64_t rows, int64_t n, uint32_t* key,
                   int32_t* left, int64_t* next, int64_t* out) {
  const bits32* bits = (const bits32*)probs;
  for (int64_t r = 0; r < rows; r++) {
    uint32_t hi = 0;
    for (int64_t i = r * n; i < (r + 1) * n; i++) hi = bits[i] > hi ? bits[i] : hi;
    if (hi == 0 || hi >= 0x7f800000u) return 1;
  }
  uint32_t w[2 * CHUNK];
  Twister t = {key, *left, *next};
  for (int64_t r = 0; r < rows; r++) {
    const float* row = probs + r * n;
    /* Blocks of entries in order: the exact ratio of the block's entry with
     * the largest bound first, then every entry whose bound reaches the best
     * ratio so far; the first entry with the largest ratio wins. */
    Draw d = {0.0f, -1, -1};
    for (int64_t base = 0; base < n; base += CHUNK) {
      int64_t m = n - base < CHUNK ? n - base : CHUNK;
      const float* x = row + base;
      words(&t, w, 2 * m);
      int64_t seed = largest_bound(x, w, m);
      Draw first = d;
      if (x[seed] > 0.0f) consider(&first, x, w, seed, base);
      /* No entry below the bar can win (before any positive entry: none but
       * those with a zero bound, for a NaN ratio). */
      float bar = first.at >= 0 ? first.best : INFINITY;
      int64_t i = 0;
#ifdef __AVX2__
      for (; i + 8 <= m; i += 8) {
        int hits = may_reach(x + i, w + 2 * i, bar);
        while (hits) {
          consider(&d, x, w, i + __builtin_ctz(hits), base);
          hits &= hits - 1;
        }
      }
#endif
      for (; i < m; i++) {
        float u_low = (float)(w[2 * i] & HIGH21) * LOW_SCALE;
        if (u_low == 0.0f || x[i] * (1.0f + 1e-5f) >= bar * u_low) consider(&d, x, w, i, base);
      }
    }
    out[r] = d.nan_at >= 0 ? d.nan_at : d.at;
  }
  *left = t.left;
  *next = t.next;
  return 0;
}

/* ---- beam search's top candidates ---------------------------------------- */

enum { BEAM_MAX_K = 256 };

typedef struct {
  float* v;
  int64_t* at;
  int64_t k, n; /* capacity, filled */
} Best;

/* Insert value x (flat index i, larger than every index so far) behind the
 * kept values it does not exceed; the smallest drops out when full. */
static inline void keep_best(Best* b, float x, int64_t i) {
  int64_t j = b->n < b->k ? b->n++ : b->k - 1;
  while (j > 0 && x > b->v[j - 1]) {
    b->v[j] = b->v[j - 1];
    b->at[j] = b->at[j - 1];
    j--;
  }
  b->v[j] = x;
  b->at[j] = i;
}

/* values[0..k) and index[0..k) (flat: row * n + column): the k largest of
 * logprobs[r, c] + add[r] over rows x n values, k <= rows * n. Returns 0,
 * 1 for a NaN (nothing to trust), 2 for k out of range. */
int gk_beam_top(const float* logprobs, int64_t rows, int64_t n, const float* add, int64_t k,
                float* values, int64_t* index) {
  if (k < 1 || k > BEAM_MAX_K || k > rows * n) return 2;
  Best b = {values, index, k, 0};
  for (int64_t r = 0; r < rows; r++) {
    const float* x = logprobs + r * n;
    const float a = add[r];
    if (a != a) return 1;
    int64_t c = 0;
    for (; c < n && b.n < b.k; c++) {
      float t = x[c] + a;
      if (t != t) return 1;
      keep_best(&b, t, r * n + c);
    }
#ifdef __AVX2__
    const __m256 av = _mm256_set1_ps(a);
    for (; c + 8 <= n; c += 8) {
      __m256 t = _mm256_add_ps(_mm256_loadu_ps(x + c), av);
      __m256 bar = _mm256_set1_ps(b.v[b.k - 1]);
      int nan = _mm256_movemask_ps(_mm256_cmp_ps(t, t, _CMP_UNORD_Q));
      int hits = _mm256_movemask_ps(_mm256_cmp_ps(t, bar, _CMP_GT_OQ));
      if (nan) return 1;
      while (hits) {
        int l = __builtin_ctz(hits);
        float v = x[c + l] + a;
        if (v > b.v[b.k - 1]) keep_best(&b, v, r * n + c + l);
        hits &= hits - 1;
      }
    }
#endif
    for (; c < n; c++) {
      float t = x[c] + a;
      if (t != t) return 1;
      if (t > b.v[b.k - 1]) keep_best(&b, t, r * n + c);
    }
  }
  return 0;
}
