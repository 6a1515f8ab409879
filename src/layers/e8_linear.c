/* e8_linear.c - E8-RHT linear layer: input RHT, codebook-gather matmul, output RHT.
 *
 * B <= 8 rows: W̃ is never materialised. Each output row walks its index row once, decodes an 8-block
 * from the int8 table (2c, 512 KB, stays in L2), adds the stage-2 block, and does B dot products.
 * B > 8: tiles of TILE rows of W̃; each thread decodes its rows of a tile to f32 and multiplies them
 * with the dense kernel (glq_gemm_nt), one parallel loop per tile (no BLAS threads to contend with).
 * Every output element is a fixed-order sum, so results do not depend on the thread count. The AVX2
 * and portable kernels round differently (FMA and lane order), both within f32 dot-product error of
 * x·dequantize()ᵀ; GLQ_NO_AVX2=1 selects the portable one.
 * The E8P codebook (kind "e8p") runs the same kernels on its tables of 4c (stage 2: E81B or E8P), scaled
 * by 1/4 instead of the shell book's 2c by 1/2. */
#include "e8_linear.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../core/error.h"
#include "../core/pool.h"
#include "dense_linear.h"
#include "../quant/e8.h"
#include "../quant/e8p.h"
#include "../quant/codec.h"
#include "../quant/hadamard.h"
#include "../quant/rht.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define E8L_X86 1
#endif

#define TILE 256
#define TILE_CHUNK 32 /* fewest rows of a tile that one thread decodes and multiplies */
#define SMALL_B 8

typedef struct {
  glq_linear base;
  int64_t mp, np, nb;
  int bits, avx2;
  uint16_t *q, *q2;
  float inv_rs, wscale;
  float *su, *sv, *bias;
  const glq_hadamard *hm, *hn;
  glq_hadamard_kind transform;
  const glq_e8_codebook *cb;
  const int8_t *t8, *t8b; /* stage 1 and stage 2 tables (unit·t = the codeword) */
  float unit;             /* 1/2 (E8 shell, 2c) or 1/4 (E8P, 4c) */
  int codebook;           /* GLQ_CODEBOOK_E8 or _E8P */
  float *xt, *yt, *tile; /* scratch: rows x np, rows x mp, TILE x np */
  int64_t rows_cap;
} e8lin;

/* ---------- decoding rows of W̃ ---------- */

/* dst[0..np) = row i of W̃ */
static void decode_row(const e8lin *l, int64_t i, float *dst) {
  int32_t a[256], b[256];
  const uint16_t *q = l->q + i * l->nb, *q2 = l->q2 ? l->q2 + i * l->nb : NULL;
  if (l->codebook == GLQ_CODEBOOK_E8P) { /* the f32 decode of ldlq.c: (C1 + inv_rs·C2)·Wscale */
    for (int64_t jb = 0; jb < l->nb; jb++)
      for (int k = 0; k < 8; k++) {
        float v = 0.25f * l->t8[8 * (size_t)q[jb] + k];
        if (q2) v = v + l->inv_rs * (0.25f * l->t8b[8 * (size_t)q2[jb] + k]);
        dst[8 * jb + k] = l->wscale * v;
      }
    return;
  }
  for (int64_t j0 = 0; j0 < l->nb; j0 += 256) {
    int64_t n = l->nb - j0 < 256 ? l->nb - j0 : 256;
    for (int64_t j = 0; j < n; j++) { a[j] = q[j0 + j]; b[j] = q2 ? q2[j0 + j] : 0; }
    if (q2) glq_e8_decode2(l->cb, l->cb, a, b, l->inv_rs, n, dst + 8 * j0);
    else glq_e8_decode(l->cb, a, n, dst + 8 * j0);
  }
  for (int64_t k = 0; k < l->np; k++) dst[k] *= l->wscale;
}

typedef struct {
  const e8lin *l;
  int64_t row0;
  float *dst;
} dec_job;

static void decode_range(void *ctx, int64_t lo, int64_t hi) {
  const dec_job *j = ctx;
  for (int64_t r = lo; r < hi; r++) decode_row(j->l, j->row0 + r, j->dst + r * j->l->np);
}

/* ---------- fused decode + dot for B <= 8 ---------- */

typedef struct {
  const e8lin *l;
  const float *xt;
  int B;
  float *yt;
} dot_job;

/* 8 lanes summed in a fixed tree, the same in both kernels */
static float hsum8(const float *v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }

static void dot_range_portable(const dot_job *j, int64_t lo, int64_t hi) {
  const e8lin *l = j->l;
  const int8_t *t8 = l->t8;
  for (int64_t i = lo; i < hi; i++) {
    const uint16_t *q = l->q + i * l->nb, *q2 = l->q2 ? l->q2 + i * l->nb : NULL;
    float acc[SMALL_B][8] = {{0}};
    for (int64_t jb = 0; jb < l->nb; jb++) {
      float w[8];
      const int8_t *c = t8 + 8 * (size_t)q[jb];
      for (int k = 0; k < 8; k++) w[k] = c[k];
      if (q2) {
        const int8_t *c2 = l->t8b + 8 * (size_t)q2[jb];
        for (int k = 0; k < 8; k++) w[k] += l->inv_rs * c2[k];
      }
      for (int b = 0; b < j->B; b++) {
        const float *x = j->xt + b * l->np + 8 * jb;
        for (int k = 0; k < 8; k++) acc[b][k] += w[k] * x[k];
      }
    }
    for (int b = 0; b < j->B; b++) j->yt[b * l->mp + i] = l->unit * l->wscale * hsum8(acc[b]);
  }
}

#ifdef E8L_X86
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

/* codebook entry i as 8 floats (2c) */
AVX2_INLINE __m256 entry_avx2(const int8_t *t8, unsigned i) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(t8 + 8 * (size_t)i))));
}

/* block jb of a row: 2c1 + inv_rs * 2c2 (stage2 is a constant after inlining) */
AVX2_INLINE __m256 block_avx2(const int8_t *t8, const int8_t *t8b, const uint16_t *q, const uint16_t *q2, __m256 irs,
                              int64_t jb, const int stage2) {
  __m256 w = entry_avx2(t8, q[jb]);
  if (stage2) w = _mm256_fmadd_ps(entry_avx2(t8b, q2[jb]), irs, w);
  return w;
}

/* four indices of a row from one 64-bit load */
AVX2_INLINE uint64_t quad(const uint16_t *q, int64_t jb) {
  uint64_t w;
  memcpy(&w, q + jb, sizeof w);
  return w;
}

/* 2c1 + inv_rs * 2c2 for the k-th index of two quads (stage2 is a constant after inlining) */
AVX2_INLINE __m256 quad_block(const int8_t *t8, const int8_t *t8b, uint64_t w, uint64_t w2, __m256 irs, int k,
                              const int stage2) {
  __m256 v = entry_avx2(t8, (uint16_t)(w >> (16 * k)));
  if (stage2) v = _mm256_fmadd_ps(entry_avx2(t8b, (uint16_t)(w2 >> (16 * k))), irs, v);
  return v;
}

/* one output row against one input row: lane sums of four FMA chains (they hide the FMA latency) */
AVX2_INLINE __m256 row1_avx2(const e8lin *l, const float *x, int64_t i, const int stage2) {
  const __m256 irs = _mm256_set1_ps(l->inv_rs);
  const int64_t nb = l->nb;
  const uint16_t *q = l->q + i * nb, *q2 = stage2 ? l->q2 + i * nb : NULL;
  const int8_t *t8 = l->t8, *t8b = l->t8b;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t jb = 0;
  for (; jb + 4 <= nb; jb += 4) {
    uint64_t w = quad(q, jb), w2 = stage2 ? quad(q2, jb) : 0;
    a0 = _mm256_fmadd_ps(quad_block(t8, t8b, w, w2, irs, 0, stage2), _mm256_loadu_ps(x + 8 * jb), a0);
    a1 = _mm256_fmadd_ps(quad_block(t8, t8b, w, w2, irs, 1, stage2), _mm256_loadu_ps(x + 8 * jb + 8), a1);
    a2 = _mm256_fmadd_ps(quad_block(t8, t8b, w, w2, irs, 2, stage2), _mm256_loadu_ps(x + 8 * jb + 16), a2);
    a3 = _mm256_fmadd_ps(quad_block(t8, t8b, w, w2, irs, 3, stage2), _mm256_loadu_ps(x + 8 * jb + 24), a3);
  }
  for (; jb < nb; jb++) a0 = _mm256_fmadd_ps(block_avx2(t8, t8b, q, q2, irs, jb, stage2), _mm256_loadu_ps(x + 8 * jb), a0);
  return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

/* one output row against B input rows; lane sums in out[b][0..8) */
AVX2_INLINE void rowb_avx2(const e8lin *l, const dot_job *j, int64_t i, float out[SMALL_B][8], const int stage2) {
  const __m256 irs = _mm256_set1_ps(l->inv_rs);
  const int64_t nb = l->nb, np = l->np;
  const uint16_t *q = l->q + i * nb, *q2 = stage2 ? l->q2 + i * nb : NULL;
  const int8_t *t8 = l->t8, *t8b = l->t8b;
  const float *x = j->xt;
  __m256 acc[SMALL_B];
  for (int b = 0; b < SMALL_B; b++) acc[b] = _mm256_setzero_ps();
  for (int64_t jb = 0; jb < nb; jb++) {
    __m256 w = block_avx2(t8, t8b, q, q2, irs, jb, stage2);
    for (int b = 0; b < j->B; b++) acc[b] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + b * np + 8 * jb), acc[b]);
  }
  for (int b = 0; b < j->B; b++) _mm256_storeu_ps(out[b], acc[b]);
}

/* the lanes of v summed in hsum8's order: ((0+4) + (2+6)) + ((1+5) + (3+7)) */
AVX2_INLINE float hsum8_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* The index rows QAHEAD rows ahead: they come from memory once per forward, and waiting for them
 * stalls the gathers from the table (a sweep over SmolLM2's layers on one thread: 8.5 -> 6.9 ms). */
#define QAHEAD 8
AVX2_INLINE void prefetch_indices(const e8lin *l, int64_t i) {
  if (i + QAHEAD >= l->mp) return;
  size_t off = (size_t)(i + QAHEAD) * (size_t)l->nb, len = 2 * (size_t)l->nb;
  for (size_t k = 0; k < len; k += 64) _mm_prefetch((const char *)(l->q + off) + k, _MM_HINT_T0);
  if (l->q2)
    for (size_t k = 0; k < len; k += 64) _mm_prefetch((const char *)(l->q2 + off) + k, _MM_HINT_T0);
}

/* rows [lo, hi) of W̃ from row0 on into dst (forward tiles; dequantize uses the exact decode_row) */
__attribute__((target("avx2,fma"))) static void decode_range_avx2(const dec_job *j, int64_t lo, int64_t hi) {
  const e8lin *l = j->l;
  const __m256 irs = _mm256_set1_ps(l->inv_rs), sc = _mm256_set1_ps(l->unit * l->wscale);
  for (int64_t r = lo; r < hi; r++) {
    const uint16_t *q = l->q + (j->row0 + r) * l->nb, *q2 = l->q2 ? l->q2 + (j->row0 + r) * l->nb : NULL;
    float *dst = j->dst + r * l->np;
    if (q2)
      for (int64_t jb = 0; jb < l->nb; jb++) _mm256_storeu_ps(dst + 8 * jb, _mm256_mul_ps(block_avx2(l->t8, l->t8b, q, q2, irs, jb, 1), sc));
    else
      for (int64_t jb = 0; jb < l->nb; jb++) _mm256_storeu_ps(dst + 8 * jb, _mm256_mul_ps(block_avx2(l->t8, l->t8b, q, q2, irs, jb, 0), sc));
  }
}

__attribute__((target("avx2,fma"))) static void dot_range_avx2(const dot_job *j, int64_t lo, int64_t hi) {
  const e8lin *l = j->l;
  const float scale = l->unit * l->wscale;
  for (int64_t i = lo; i < hi; i++) {
    prefetch_indices(l, i);
    if (j->B == 1) {
      __m256 v = l->q2 ? row1_avx2(l, j->xt, i, 1) : row1_avx2(l, j->xt, i, 0);
      j->yt[i] = scale * hsum8_avx2(v);
      continue;
    }
    float out[SMALL_B][8];
    if (l->q2) rowb_avx2(l, j, i, out, 1);
    else rowb_avx2(l, j, i, out, 0);
    for (int b = 0; b < j->B; b++) j->yt[b * l->mp + i] = scale * hsum8(out[b]);
  }
}
#endif

static void tile_range(void *ctx, int64_t lo, int64_t hi) {
  const dec_job *j = ctx;
#ifdef E8L_X86
  if (j->l->avx2) { decode_range_avx2(j, lo, hi); return; }
#endif
  decode_range(ctx, lo, hi);
}

typedef struct {
  dec_job d; /* the tile: rows d.row0.. of W̃ into d.dst */
  int64_t B;
} mm_job;

/* rows [lo, hi) of the tile: decode them, then their outputs for every input row */
static void tile_mm_range(void *ctx, int64_t lo, int64_t hi) {
  const mm_job *j = ctx;
  const e8lin *l = j->d.l;
  tile_range((void *)&j->d, lo, hi);
  glq_gemm_nt(l->xt, l->np, j->B, j->d.dst + lo * l->np, GLQ_F32, l->np, hi - lo, l->np, NULL, l->yt + j->d.row0 + lo,
              l->mp);
}

static void dot_range(void *ctx, int64_t lo, int64_t hi) {
  const dot_job *j = ctx;
#ifdef E8L_X86
  if (j->l->avx2) { dot_range_avx2(j, lo, hi); return; }
#endif
  dot_range_portable(j, lo, hi);
}

/* ---------- glq_linear methods ---------- */

static int ensure_rows(e8lin *l, int64_t rows) {
  if (rows <= l->rows_cap) return GLQ_OK;
  float *xt = realloc(l->xt, (size_t)(rows * l->np) * sizeof(float));
  if (xt) l->xt = xt;
  float *yt = xt ? realloc(l->yt, (size_t)(rows * l->mp) * sizeof(float)) : NULL;
  if (yt) l->yt = yt;
  if (!xt || !yt) return glq_error(GLQ_ENOMEM, "e8 linear: no memory for %lld input rows", (long long)rows);
  l->rows_cap = rows;
  return GLQ_OK;
}

/* unaligned access through a vector type (GCC lets vectors alias their element type) */
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define VEC(p) (*(v8u *)(p))

/* dst = a ⊙ s, 8 at a time (the same rounding as the scalar loop) */
static void mul_into(float *dst, const float *a, const float *s, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) VEC(dst + k) = VEC(a + k) * VEC(s + k);
  for (; k < n; k++) dst[k] = a[k] * s[k];
}

/* dst = a ⊙ s + c (c NULL: + 0), 8 at a time, rounded after the product and after the sum */
static void mul_add_into(float *dst, const float *a, const float *s, const float *c, int64_t n) {
  int64_t k = 0;
  const v8u zero = {0};
  for (; k + 8 <= n; k += 8) VEC(dst + k) = VEC(a + k) * VEC(s + k) + (c ? VEC(c + k) : zero);
  for (; k < n; k++) dst[k] = a[k] * s[k] + (c ? c[k] : 0.0f);
}

static int e8_forward(glq_linear *base, const float *x, int64_t B, float *y) {
  e8lin *l = (e8lin *)base;
  const int64_t m = base->out, n = base->in;
  if (B < 0) return glq_error(GLQ_EINVAL, "e8 linear forward: batch %lld is negative", (long long)B);
  if (B == 0) return GLQ_OK;
  int rc = ensure_rows(l, B);
  if (rc) return rc;
  for (int64_t b = 0; b < B; b++) {
    float *xt = l->xt + b * l->np;
    mul_into(xt, x + b * n, l->sv, n);
    for (int64_t k = n; k < l->np; k++) xt[k] = 0;
  }
  glq_hadamard_apply(l->hn, l->xt, B, 0);
  if (B <= SMALL_B) {
    dot_job j = {l, l->xt, (int)B, l->yt};
    glq_parallel_for(l->mp, 16, dot_range, &j);
  } else {
    if (!l->tile && !(l->tile = malloc((size_t)(TILE * l->np) * sizeof(float))))
      return glq_error(GLQ_ENOMEM, "e8 linear: no memory for a %d x %lld tile", TILE, (long long)l->np);
    for (int64_t i0 = 0; i0 < l->mp; i0 += TILE) {
      int64_t t = l->mp - i0 < TILE ? l->mp - i0 : TILE;
      mm_job j = {{l, i0, l->tile}, B};
      glq_parallel_for(t, TILE_CHUNK, tile_mm_range, &j);
    }
  }
  glq_hadamard_apply(l->hm, l->yt, B, 1);
  for (int64_t b = 0; b < B; b++) mul_add_into(y + b * m, l->yt + b * l->mp, l->su, l->bias, m);
  return GLQ_OK;
}

static int e8_dequantize(const glq_linear *base, float *w) {
  const e8lin *l = (const e8lin *)base;
  float *a = malloc((size_t)(l->mp * l->np) * sizeof *a);
  if (!a) return glq_error(GLQ_ENOMEM, "e8 linear dequantize: no memory for %lld x %lld", (long long)l->mp, (long long)l->np);
  dec_job j = {l, 0, a};
  glq_parallel_for(l->mp, 8, decode_range, &j);
  int rc = glq_rht_weight_inverse_stored(a, l->mp, l->np, base->out, base->in, l->su, l->sv, l->transform, w);
  free(a);
  return rc;
}

static size_t e8_stored_bytes(const glq_linear *base) {
  const e8lin *l = (const e8lin *)base;
  size_t idx = (size_t)(l->mp * l->nb) * 2 * (l->q2 ? 2 : 1);
  return idx + (size_t)(l->mp + l->np) * 2 + 4 + (l->q2 ? 4 : 0) + (l->bias ? (size_t)base->out * 2 : 0);
}

static void e8_destroy(glq_linear *base) {
  e8lin *l = (e8lin *)base;
  if (!l) return;
  free(l->q);
  free(l->q2);
  free(l->su);
  free(l->sv);
  free(l->bias);
  free(l->xt);
  free(l->yt);
  free(l->tile);
  free(l);
}

static const glq_linear_vt e8_vt = {"e8", e8_forward, e8_dequantize, e8_stored_bytes, e8_destroy};
static const glq_linear_vt e8p_vt = {"e8p", e8_forward, e8_dequantize, e8_stored_bytes, e8_destroy};

int glq_e8_linear_desc_of(const glq_linear *base, glq_e8_linear_desc *d) {
  if (!base || (base->vt != &e8_vt && base->vt != &e8p_vt)) return glq_error(GLQ_EINVAL, "e8 linear: not an e8 or e8p layer");
  const e8lin *l = (const e8lin *)base;
  memset(d, 0, sizeof *d);
  d->codebook = l->codebook;
  d->out = base->out;
  d->in = base->in;
  d->out_pad = l->mp;
  d->in_pad = l->np;
  d->bits = l->bits;
  d->qidxs = (const int16_t *)l->q; /* same bits; signed and unsigned variants may alias */
  d->qidxs2 = (const int16_t *)l->q2;
  d->inv_rs = l->inv_rs;
  d->wscale = l->wscale;
  d->su = l->su;
  d->sv = l->sv;
  d->bias = l->bias;
  d->transform = l->transform;
  return GLQ_OK;
}

/* ---------- construction ---------- */

static float *copy_floats(const float *src, int64_t n, const char *what, int *rc) {
  float *d = malloc((size_t)n * sizeof *d);
  if (!d) { *rc = glq_error(GLQ_ENOMEM, "e8 linear: no memory for %s", what); return NULL; }
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(src[i])) {
      *rc = glq_error(GLQ_EINVAL, "e8 linear: %s[%lld] is not finite", what, (long long)i);
      free(d);
      return NULL;
    }
    d[i] = src[i];
  }
  return d;
}

static int check_desc(const glq_e8_linear_desc *d) {
  if (d->out < 1 || d->in < 1)
    return glq_error(GLQ_EINVAL, "e8 linear: shape %lld x %lld must be positive", (long long)d->out, (long long)d->in);
  if (d->out_pad < d->out || d->in_pad < d->in)
    return glq_error(GLQ_EINVAL, "e8 linear: padded shape %lld x %lld is smaller than %lld x %lld",
                     (long long)d->out_pad, (long long)d->in_pad, (long long)d->out, (long long)d->in);
  if (d->in_pad % 8)
    return glq_error(GLQ_EINVAL, "e8 linear: padded input size %lld is not a multiple of 8", (long long)d->in_pad);
  if (d->bits < 2 || d->bits > 4) return glq_error(GLQ_EINVAL, "e8 linear: bits must be 2, 3 or 4, got %d", d->bits);
  if (d->codebook != GLQ_CODEBOOK_E8 && d->codebook != GLQ_CODEBOOK_E8P)
    return glq_error(GLQ_EINVAL, "e8 linear: unknown codebook id %d (e8 = 0, e8p = 1)", d->codebook);
  if (!d->qidxs) return glq_error(GLQ_EINVAL, "e8 linear: Qidxs is missing");
  if ((d->bits == 2) != (d->qidxs2 == NULL))
    return glq_error(GLQ_EINVAL, "e8 linear: %d bits %s Qidxs2", d->bits, d->bits == 2 ? "takes no" : "needs");
  if (!d->su || !d->sv) return glq_error(GLQ_EINVAL, "e8 linear: %s is missing", d->su ? "SV" : "SU");
  if (!isfinite(d->wscale)) return glq_error(GLQ_EINVAL, "e8 linear: Wscale is not finite");
  if (d->qidxs2 && !isfinite(d->inv_rs)) return glq_error(GLQ_EINVAL, "e8 linear: inv_resid_scale is not finite");
  return GLQ_OK;
}

int glq_e8_linear_new(const glq_e8_linear_desc *d, glq_linear **out) {
  *out = NULL;
  int rc = check_desc(d);
  if (rc) return rc;
  const glq_e8_codebook *cb = glq_e8_codebook_get(65536);
  if (!cb || (d->codebook == GLQ_CODEBOOK_E8P && glq_e8p_init())) {
    glq_error_prefix("e8 linear");
    return GLQ_ENOMEM;
  }
  e8lin *l = calloc(1, sizeof *l);
  if (!l) return glq_error(GLQ_ENOMEM, "e8 linear: out of memory");
  l->base.vt = d->codebook == GLQ_CODEBOOK_E8P ? &e8p_vt : &e8_vt;
  l->base.in = d->in;
  l->base.out = d->out;
  l->mp = d->out_pad;
  l->np = d->in_pad;
  l->nb = d->in_pad / 8;
  l->bits = d->bits;
  l->inv_rs = d->qidxs2 ? d->inv_rs : 0;
  l->wscale = d->wscale;
  l->transform = d->transform;
  l->cb = cb;
  l->codebook = d->codebook;
  if (d->codebook == GLQ_CODEBOOK_E8P) {
    l->t8 = glq_e8p_table4();
    l->t8b = d->bits == 3 ? glq_e81b_table4() : l->t8;
    l->unit = 0.25f;
  } else {
    l->t8 = l->t8b = glq_e8_table_i8(cb);
    l->unit = 0.5f;
  }
#ifdef E8L_X86
  const char *no = getenv("GLQ_NO_AVX2");
  l->avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(no && *no && *no != '0');
#endif
  size_t nq = (size_t)(l->mp * l->nb);
  if ((rc = glq_hadamard_plan(l->mp, d->transform, &l->hm)) || (rc = glq_hadamard_plan(l->np, d->transform, &l->hn))) {
    glq_error_prefix("e8 linear");
    goto fail;
  }
  l->q = malloc(nq * sizeof *l->q);
  l->q2 = d->qidxs2 ? malloc(nq * sizeof *l->q2) : NULL;
  if (!l->q || (d->qidxs2 && !l->q2)) { rc = glq_error(GLQ_ENOMEM, "e8 linear: no memory for indices"); goto fail; }
  for (size_t i = 0; i < nq; i++) {
    l->q[i] = (uint16_t)d->qidxs[i];
    if (!l->q2) continue;
    l->q2[i] = (uint16_t)d->qidxs2[i];
    if (d->bits == 3 && l->q2[i] >= 256) {
      rc = glq_error(GLQ_EINVAL, "%s linear: 3-bit Qidxs2[%lld][%lld] = %u is not below 256", l->base.vt->kind, (long long)(i / l->nb),
                     (long long)(i % l->nb), (unsigned)l->q2[i]);
      goto fail;
    }
  }
  if (!(l->su = copy_floats(d->su, l->mp, "SU", &rc)) || !(l->sv = copy_floats(d->sv, l->np, "SV", &rc))) goto fail;
  if (d->bias && !(l->bias = copy_floats(d->bias, d->out, "bias", &rc))) goto fail;
  l->base.bias = l->bias;
  *out = &l->base;
  return GLQ_OK;
fail:
  e8_destroy(&l->base);
  return rc;
}
