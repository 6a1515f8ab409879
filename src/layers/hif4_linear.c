/* hif4_linear.c - HiF4 linear layers and the weight quantizers behind them.
 *
 * Layer storage: each unit becomes one 36-byte record: the 32 S1P2 bytes with every nibble
 * recoded from sign-magnitude to two's complement (-7..7; -0 becomes 0), then the E1_16 bits of
 * the even groups of 4 (bit d = group 2d), of the odd groups (bit d = group 2d+1), E1_8 and the
 * E6M2 code: the same 288 bits per 64 weights, in one stream.
 *
 * Kernels work in "slice order": S1P2 dword d holds the 8 codes of elements 8d..8d+7, so
 * shifting nibble j of all 8 dwords to the top and back down arithmetically gives, lane d, the
 * signed code of element 8d+j (slice j) with no shuffles.
 * The input is permuted once per call to match (x'[64u + 8j + d] = x[64u + 8d + j], zero-padded
 * to whole units). In slice j < 4 lane d belongs to group of 4 number 2d, in j >= 4 to 2d+1, so
 * a unit needs only two micro-scale vectors: 2^(E1_8[d] + E1_16[2d]) and 2^(E1_8[d] + E1_16[2d+1]).
 * Each element is an exact small integer q in [-28, 28] times E6M2/4; the kernels multiply the
 * integers (before the micro-scales) by x in f32 and apply the scales once per unit. */
#include "hif4_linear.h"
#include "../quant/rht.h"
#include "../core/pool.h"
#include "../linalg/linalg.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define BLK GLQ_HIF4_BLOCK
#define REC GLQ_HIF4_UNIT_BYTES
#define MAX_FUSED_BATCH 8 /* larger batches decode row tiles and call sgemm */
#define TILE_FLOATS (1 << 20) /* f32 weights per decoded tile (4 MiB) */

typedef struct {
  glq_linear base;
  int64_t nb;            /* units per row */
  uint8_t *rec;          /* out * nb records */
  float *bias;           /* owned copy or NULL */
  float *sv;             /* RHT signs (glq_rht_pad(in)) or NULL; then units cover the padded rows */
  int avx2;
  float *scratch;        /* rotated and permuted inputs, decoded tiles */
  size_t scratch_cap;    /* in floats */
} hif4_t;

static float unit_scale[256];                        /* E6M2 value / 4 */
static float pow2_bits[256][8] __attribute__((aligned(32))); /* [b][d] = 2^(bit d of b) */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
  for (int c = 0; c < 256; c++) {
    unit_scale[c] = glq_hif4_e6m2_value((uint8_t)c) * 0.25f;
    for (int d = 0; d < 8; d++) pow2_bits[c][d] = (float)(1 + (c >> d & 1));
  }
}

/* Signed value of a two's complement nibble. */
static inline int nibble_value(int c) { return c < 8 ? c : c - 16; }

/* One record in slice order: w[8j + d] = q of element 8d + j (micro-scales applied, E6M2 not). */
static void decode_slices(const uint8_t *rec, float *w) {
  for (int j = 0; j < 8; j++)
    for (int d = 0; d < 8; d++) {
      int c = rec[4 * d + j / 2] >> (4 * (j & 1)) & 15;
      w[8 * j + d] = (float)nibble_value(c) * pow2_bits[rec[34]][d] * pow2_bits[rec[32 + j / 4]][d];
    }
}

/* x (B × k) -> xp (B × nb*64) in slice order, zero-padded. */
static void permute_input(const float *x, int64_t B, int64_t k, int64_t nb, float *xp) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t u = 0; u < nb; u++) {
      const float *src = x + b * k + u * BLK;
      float *dst = xp + (b * nb + u) * BLK;
      int64_t n = k - u * BLK < BLK ? k - u * BLK : BLK;
      for (int i = 0; i < BLK; i++) dst[(i % 8) * 8 + i / 8] = i < n ? src[i] : 0.0f;
    }
}

/* ---- fused forward, batch B <= 8: y[b*out + r] for rows [r0, r1) ---- */

typedef struct {
  const hif4_t *h;
  const float *xp;  /* B × nb*64, slice order */
  int64_t B;
  float *y;         /* B × out */
} fwd_ctx;

static void fwd_portable(void *vc, int64_t r0, int64_t r1) {
  const fwd_ctx *c = vc;
  const hif4_t *h = c->h;
  int64_t out = h->base.out, nb = h->nb;
  float w[BLK];
  for (int64_t r = r0; r < r1; r++) {
    float acc[MAX_FUSED_BATCH] = {0};
    for (int64_t u = 0; u < nb; u++) {
      const uint8_t *rec = h->rec + (r * nb + u) * REC;
      decode_slices(rec, w);
      for (int64_t b = 0; b < c->B; b++) {
        const float *xb = c->xp + (b * nb + u) * BLK;
        float p[8] = {0};
        for (int i = 0; i < BLK; i++) p[i % 8] += w[i] * xb[i];
        acc[b] += unit_scale[rec[35]] * (((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7])));
      }
    }
    for (int64_t b = 0; b < c->B; b++) c->y[b * out + r] = acc[b] + (h->bias ? h->bias[r] : 0.0f);
  }
}

#if defined(__x86_64__)
/* Slice j of a unit as f32 integers (micro-scales not applied): lane d takes nibble j of dword d,
 * shifted to the top and arithmetically back down. */
static inline __attribute__((always_inline, target("avx2,fma"))) __m256 slice_avx2(__m256i p, int j) {
  return _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(p, 28 - 4 * j), 28));
}

/* One unit against B permuted input rows: acc[b] += E6M2/4 * sum_i q_i x_b[i] (8 lanes). */
static inline __attribute__((always_inline, target("avx2,fma"))) void
unit_avx2(const uint8_t *rec, const float *xp, int64_t ldx, int B, __m256 *acc) {
  __m256i p = _mm256_loadu_si256((const __m256i *)rec);
  __m256 even[MAX_FUSED_BATCH], odd[MAX_FUSED_BATCH];
#pragma GCC unroll 8
  for (int b = 0; b < B; b++) even[b] = odd[b] = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int j = 0; j < 8; j++) {
    __m256 v = slice_avx2(p, j);
#pragma GCC unroll 8
    for (int b = 0; b < B; b++) {
      __m256 xv = _mm256_loadu_ps(xp + b * ldx + 8 * j);
      if (j < 4) even[b] = _mm256_fmadd_ps(v, xv, even[b]);
      else odd[b] = _mm256_fmadd_ps(v, xv, odd[b]);
    }
  }
  __m256 f8 = _mm256_load_ps(pow2_bits[rec[34]]), s = _mm256_set1_ps(unit_scale[rec[35]]);
  __m256 fe = _mm256_mul_ps(f8, _mm256_load_ps(pow2_bits[rec[32]]));
  __m256 fo = _mm256_mul_ps(f8, _mm256_load_ps(pow2_bits[rec[33]]));
#pragma GCC unroll 8
  for (int b = 0; b < B; b++)
    acc[b] = _mm256_fmadd_ps(s, _mm256_fmadd_ps(odd[b], fo, _mm256_mul_ps(even[b], fe)), acc[b]);
}

/* One unit's 64 weights in slice order, scaled, into dst. */
__attribute__((target("avx2,fma"))) static void decode_avx2(const uint8_t *rec, float *dst) {
  __m256i p = _mm256_loadu_si256((const __m256i *)rec);
  __m256 f8 = _mm256_mul_ps(_mm256_load_ps(pow2_bits[rec[34]]), _mm256_set1_ps(unit_scale[rec[35]]));
  __m256 fe = _mm256_mul_ps(f8, _mm256_load_ps(pow2_bits[rec[32]]));
  __m256 fo = _mm256_mul_ps(f8, _mm256_load_ps(pow2_bits[rec[33]]));
  for (int j = 0; j < 8; j++) _mm256_storeu_ps(dst + 8 * j, _mm256_mul_ps(slice_avx2(p, j), j < 4 ? fe : fo));
}

/* Horizontal sum of the 8 lanes. */
__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline, target("avx2,fma"))) void rows_avx2(const fwd_ctx *c, int B, int64_t r0,
                                                                                int64_t r1) {
  const hif4_t *h = c->h;
  int64_t out = h->base.out, nb = h->nb;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t *rec = h->rec + r * nb * REC;
    __m256 acc[MAX_FUSED_BATCH];
#pragma GCC unroll 8
    for (int b = 0; b < B; b++) acc[b] = _mm256_setzero_ps();
    for (int64_t u = 0; u < nb; u++) unit_avx2(rec + u * REC, c->xp + u * BLK, nb * BLK, B, acc);
    for (int b = 0; b < B; b++) c->y[b * out + r] = hsum8(acc[b]) + (h->bias ? h->bias[r] : 0.0f);
  }
}

__attribute__((target("avx2,fma"))) static void fwd_avx2(void *vc, int64_t r0, int64_t r1) {
  const fwd_ctx *c = vc;
  switch (c->B) { /* one constant batch per case so the unit kernel unrolls */
  case 1: rows_avx2(c, 1, r0, r1); break;
  case 2: rows_avx2(c, 2, r0, r1); break;
  case 3: rows_avx2(c, 3, r0, r1); break;
  case 4: rows_avx2(c, 4, r0, r1); break;
  case 5: rows_avx2(c, 5, r0, r1); break;
  case 6: rows_avx2(c, 6, r0, r1); break;
  case 7: rows_avx2(c, 7, r0, r1); break;
  default: rows_avx2(c, 8, r0, r1); break;
  }
}
#endif

/* ---- decoding rows into f32 ---- */

typedef struct {
  const hif4_t *h;
  int64_t r0;
  float *w;        /* rows × nb*64 in slice order, row r - r0 */
} dec_ctx;

static void dec_range(void *vc, int64_t a, int64_t b) {
  const dec_ctx *c = vc;
  const hif4_t *h = c->h;
  for (int64_t r = a; r < b; r++)
    for (int64_t u = 0; u < h->nb; u++) {
      const uint8_t *rec = h->rec + ((c->r0 + r) * h->nb + u) * REC;
      float *dst = c->w + (r * h->nb + u) * BLK;
#if defined(__x86_64__)
      if (h->avx2) {
        decode_avx2(rec, dst);
        continue;
      }
#endif
      decode_slices(rec, dst);
      for (int i = 0; i < BLK; i++) dst[i] *= unit_scale[rec[35]];
    }
}

static void decode_rows(const hif4_t *h, int64_t r0, int64_t rows, float *w) {
  dec_ctx c = {h, r0, w};
  glq_parallel_for(rows, 8, dec_range, &c);
}

static int grow_scratch(hif4_t *h, size_t n) {
  if (n <= h->scratch_cap) return GLQ_OK;
  float *p = realloc(h->scratch, n * sizeof(float));
  if (!p) return glq_error(GLQ_ENOMEM, "hif4 linear: cannot allocate %zu scratch floats", n);
  h->scratch = p;
  h->scratch_cap = n;
  return GLQ_OK;
}

static int hif4_forward(glq_linear *l, const float *x, int64_t B, float *y) {
  hif4_t *h = (hif4_t *)l;
  int64_t in = l->in, out = l->out, kp = h->nb * BLK, k = h->sv ? glq_rht_pad(in) : in;
  if (B < 0) return glq_error(GLQ_EINVAL, "hif4 linear: batch %lld < 0", (long long)B);
  if (B == 0) return GLQ_OK;
  int64_t tile = TILE_FLOATS / kp < 8 ? 8 : TILE_FLOATS / kp;
  if (tile > out) tile = out;
  size_t xr = h->sv ? (size_t)(B * k) : 0, xp = (size_t)(B * kp);
  int rc = grow_scratch(h, xr + xp + (B > MAX_FUSED_BATCH ? (size_t)(tile * kp) : 0));
  if (rc) return rc;
  if (h->sv) {
    if ((rc = glq_rht_input(x, B, in, h->sv, GLQ_HADAMARD_DEFAULT, h->scratch))) return rc;
    x = h->scratch;
  }
  float *xperm = h->scratch + xr;
  permute_input(x, B, k, h->nb, xperm);
  if (B <= MAX_FUSED_BATCH) {
    fwd_ctx c = {h, xperm, B, y};
    glq_range_fn fn = fwd_portable;
#if defined(__x86_64__)
    if (h->avx2) fn = fwd_avx2;
#endif
    glq_parallel_for(out, 16, fn, &c);
    return GLQ_OK;
  }
  float *wt = xperm + xp;
  for (int64_t b = 0; b < B; b++)
    for (int64_t r = 0; r < out; r++) y[b * out + r] = h->bias ? h->bias[r] : 0.0f;
  for (int64_t r0 = 0; r0 < out; r0 += tile) {
    int64_t n = out - r0 < tile ? out - r0 : tile;
    decode_rows(h, r0, n, wt);
    glq_sgemm(0, 1, B, n, kp, 1.0f, xperm, kp, wt, kp, 1.0f, y + r0, out);
  }
  return GLQ_OK;
}

/* Natural-order weights (rows of k values): decode each unit in slice order and transpose it back. */
typedef struct {
  const hif4_t *h;
  int64_t k;
  float *w;
} undo_ctx;

static void undo_range(void *vc, int64_t a, int64_t b) {
  const undo_ctx *c = vc;
  const hif4_t *h = c->h;
  float w[BLK];
  for (int64_t r = a; r < b; r++)
    for (int64_t u = 0; u < h->nb; u++) {
      const uint8_t *rec = h->rec + (r * h->nb + u) * REC;
      decode_slices(rec, w);
      for (int i = 0; i < BLK && u * BLK + i < c->k; i++)
        c->w[r * c->k + u * BLK + i] = unit_scale[rec[35]] * w[(i % 8) * 8 + i / 8];
    }
}

static int hif4_dequantize(const glq_linear *l, float *w) {
  const hif4_t *h = (const hif4_t *)l;
  undo_ctx c = {h, h->sv ? glq_rht_pad(l->in) : l->in, w};
  if (!h->sv) {
    glq_parallel_for(l->out, 8, undo_range, &c);
    return GLQ_OK;
  }
  if (!(c.w = malloc((size_t)(l->out * c.k) * sizeof(float))))
    return glq_error(GLQ_ENOMEM, "hif4 linear: out of memory dequantizing %lldx%lld", (long long)l->out, (long long)c.k);
  glq_parallel_for(l->out, 8, undo_range, &c);
  int rc = glq_rht_output(c.w, l->out, l->in, h->sv, GLQ_HADAMARD_DEFAULT, w); /* rows: crop(sv ⊙ Hᵀ row) */
  free(c.w);
  return rc;
}

static size_t hif4_stored_bytes(const glq_linear *l) {
  const hif4_t *h = (const hif4_t *)l;
  return (size_t)(l->out * h->nb * REC) + (h->sv ? (size_t)glq_rht_pad(l->in) / 8 : 0);
}

static void hif4_destroy(glq_linear *l) {
  hif4_t *h = (hif4_t *)l;
  free(h->rec);
  free(h->bias);
  free(h->sv);
  free(h->scratch);
  free(h);
}

static const glq_linear_vt hif4_vt = {"hif4", hif4_forward, hif4_dequantize, hif4_stored_bytes, hif4_destroy};

/* n values of a float/int tensor as f32 into dst (dst[i] = t[i]); checks the count. */
static int copy_vector(const glq_tensor *t, int64_t n, const char *what, float *dst) {
  if (!t->st || glq_tensor_numel(t) != n || t->dtype == GLQ_BOOL)
    return glq_error(GLQ_EINVAL, "hif4 linear: %s must be a numeric tensor of %lld elements, got %lld", what,
                     (long long)n, t->st ? (long long)glq_tensor_numel(t) : 0LL);
  glq_tensor c;
  int rc = glq_tensor_to(t, GLQ_F32, &c);
  if (rc) return rc;
  memcpy(dst, glq_tensor_data(&c), (size_t)n * sizeof(float));
  glq_tensor_release(&c);
  return GLQ_OK;
}

/* Sign-magnitude S1P2 code -> two's complement nibble (code 8, "-0", becomes 0). */
static int to_twos(int c) { return (c & 8) ? (16 - (c & 7)) & 15 : c; }

int glq_hif4_linear_new(const glq_hif4_fields *w, const glq_tensor *bias, const glq_tensor *signs, int kernel,
                        glq_linear **out) {
  *out = NULL;
  int rc = glq_hif4_fields_check(w, 1);
  if (rc) return rc;
  if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1)
    return glq_error(GLQ_EINVAL, "hif4 linear: weight must be 2-D (out, in) with sizes >= 1, got %d dims", w->ndim);
  int64_t o = w->shape[0], in = w->shape[1], nb = glq_hif4_nblocks(in);
  hif4_t *h = calloc(1, sizeof *h);
  if (!h) return glq_error(GLQ_ENOMEM, "hif4 linear: out of memory");
  h->base.vt = &hif4_vt;
  h->base.in = in;
  h->base.out = o;
  h->nb = nb;
  h->rec = malloc((size_t)(o * nb * REC));
  int64_t np = glq_rht_pad(in);
  if (!h->rec) rc = glq_error(GLQ_ENOMEM, "hif4 linear: out of memory for %lldx%lld", (long long)o, (long long)in);
  if (!rc && bias) {
    if (!(h->bias = malloc((size_t)o * sizeof(float)))) rc = glq_error(GLQ_ENOMEM, "hif4 linear: out of memory");
    else rc = copy_vector(bias, o, "bias", h->bias);
    h->base.bias = h->bias;
  }
  if (!rc && signs) {
    if (!(h->sv = malloc((size_t)np * sizeof(float)))) rc = glq_error(GLQ_ENOMEM, "hif4 linear: out of memory");
    else rc = copy_vector(signs, np, "signs (glq_rht_pad(in) values)", h->sv);
    for (int64_t i = 0; !rc && i < np; i++)
      if (h->sv[i] != 1.0f && h->sv[i] != -1.0f)
        rc = glq_error(GLQ_EINVAL, "hif4 linear: signs[%lld] = %g, expected +1 or -1", (long long)i, h->sv[i]);
  }
  if (rc) {
    hif4_destroy(&h->base);
    return rc;
  }
  pthread_once(&tables_once, init_tables);
  const char *e = getenv("GLQ_NO_AVX2");
#if defined(__x86_64__)
  h->avx2 = kernel == GLQ_HIF4_KERNEL_AUTO && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            !(e && *e == '1');
#else
  (void)kernel, (void)e;
#endif
  glq_hif4_buf b = glq_hif4_fields_buf(w);
  for (int64_t u = 0; u < o * nb; u++) {
    uint8_t *r = h->rec + u * REC;
    for (int i = 0; i < 32; i++) r[i] = (uint8_t)(to_twos(b.s1p2[32 * u + i] & 15) | to_twos(b.s1p2[32 * u + i] >> 4) << 4);
    uint32_t e16 = (uint32_t)b.e1_16[2 * u] | (uint32_t)b.e1_16[2 * u + 1] << 8;
    r[32] = r[33] = 0;
    for (int d = 0; d < 8; d++) {
      r[32] |= (uint8_t)((e16 >> (2 * d) & 1) << d);
      r[33] |= (uint8_t)((e16 >> (2 * d + 1) & 1) << d);
    }
    r[34] = b.e1_8[u];
    r[35] = b.e6m2[u];
  }
  *out = &h->base;
  return GLQ_OK;
}

int glq_hif4_linear_desc_of(const glq_linear *l, glq_hif4_linear_desc *d) {
  if (!l || l->vt != &hif4_vt) return glq_error(GLQ_EINVAL, "hif4 linear: not a hif4 layer");
  const hif4_t *h = (const hif4_t *)l;
  d->out = l->out;
  d->in = l->in;
  d->nb = h->nb;
  d->bias = h->bias;
  d->signs = h->sv;
  return GLQ_OK;
}

/* Two's complement nibble -> sign-magnitude S1P2 code (the inverse of to_twos). */
static int from_twos(int c) { return c < 8 ? c : 8 | (16 - c); }

int glq_hif4_linear_fields_of(const glq_linear *l, const glq_hif4_buf *b) {
  if (!l || l->vt != &hif4_vt) return glq_error(GLQ_EINVAL, "hif4 linear: not a hif4 layer");
  const hif4_t *h = (const hif4_t *)l;
  for (int64_t u = 0; u < l->out * h->nb; u++) {
    const uint8_t *r = h->rec + u * REC;
    for (int i = 0; i < 32; i++) b->s1p2[32 * u + i] = (uint8_t)(from_twos(r[i] & 15) | from_twos(r[i] >> 4) << 4);
    uint32_t e16 = 0;
    for (int d = 0; d < 8; d++) e16 |= (uint32_t)(r[32] >> d & 1) << (2 * d) | (uint32_t)(r[33] >> d & 1) << (2 * d + 1);
    b->e1_16[2 * u] = (uint8_t)(e16 & 0xFF);
    b->e1_16[2 * u + 1] = (uint8_t)(e16 >> 8);
    b->e1_8[u] = r[34];
    b->e6m2[u] = r[35];
  }
  return GLQ_OK;
}

/* ---- LDLQ ---- */

/* First non-finite value of a[0..n), or -1. */
static int64_t first_nonfinite(const float *a, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(a[i])) return i;
  return -1;
}

/* A <- U with (H + damp I)^-1 = Uᵀ U, U upper triangular read row-major (glq_cholesky_inverse_upper). */
static int inverse_cholesky(const float *H, int64_t n, double rel, double mean, double *A) {
  for (int64_t i = 0; i < n * n; i++) A[i] = H[i];
  for (int64_t j = 0; j < n; j++) A[j * n + j] += rel * mean;
  return glq_cholesky_inverse_upper(A, n);
}

typedef struct {
  float *W;         /* m × n, updated in place */
  const float *U;   /* n × n upper */
  float *E;         /* m × 64 scaled errors of the current block */
  int64_t n, nb, j1, len;
  const glq_hif4_buf *out;
} ldlq_ctx;

/* GPTQ step inside one 64-column block for rows [a, b): the unit's scales come from its current
 * (already corrected) values, then each column is rounded and its error spread to the rest of
 * the block. */
static void ldlq_block(void *vc, int64_t a, int64_t b) {
  const ldlq_ctx *c = vc;
  int64_t n = c->n;
  for (int64_t r = a; r < b; r++) {
    float *w = c->W + r * n + c->j1, x[BLK] = {0}, *e = c->E + r * BLK;
    for (int t = 0; t < c->len; t++) x[t] = glq_hif4_bf16(w[t]);
    glq_hif4_scales s;
    glq_hif4_unit_scales(x, &s);
    float sc = glq_hif4_e6m2_value(s.e6m2) * 0.25f;
    uint8_t code[BLK] = {0};
    for (int t = 0; t < c->len; t++) {
      const float *u = c->U + (c->j1 + t) * n + c->j1;
      code[t] = glq_hif4_round(glq_hif4_bf16(w[t]), &s, t);
      float err = (w[t] - sc * (float)glq_hif4_qvalue(code[t], t, s.e1_8, s.e1_16)) / u[t];
      for (int v = t + 1; v < c->len; v++) w[v] -= err * u[v];
      e[t] = err;
    }
    int64_t unit = r * c->nb + c->j1 / BLK;
    c->out->e6m2[unit] = s.e6m2;
    c->out->e1_8[unit] = s.e1_8;
    c->out->e1_16[2 * unit] = (uint8_t)(s.e1_16 & 0xFF);
    c->out->e1_16[2 * unit + 1] = (uint8_t)(s.e1_16 >> 8);
    for (int i = 0; i < BLK / 2; i++) c->out->s1p2[32 * unit + i] = (uint8_t)(code[2 * i] | code[2 * i + 1] << 4);
  }
}

/* LDLQ of W (m × n, modified) with Hessian H (n × n f32, modified: dead diagonals set to 1). */
static int ldlq(float *W, int64_t m, int64_t n, float *H, double damp, const glq_hif4_buf *out, glq_hif4_wstats *st) {
  double mean = 0.0;
  for (int64_t j = 0; j < n; j++) {
    if (H[j * n + j] == 0.0f) {
      H[j * n + j] = 1.0f;
      for (int64_t r = 0; r < m; r++) W[r * n + j] = 0.0f;
      st->dead++;
    }
    mean += H[j * n + j];
  }
  mean /= (double)n;
  double *A = malloc((size_t)(n * n) * sizeof(double));
  float *E = malloc((size_t)(m * BLK) * sizeof(float));
  if (!A || !E) {
    free(A);
    free(E);
    return glq_error(GLQ_ENOMEM, "hif4 ldlq: out of memory for n = %lld", (long long)n);
  }
  double rel = damp;
  int ok = 0;
  for (int rung = 0; rung < 4 && !ok; rung++, rel *= 10.0) /* damping ladder: x1, x10, x100, x1000 */
    ok = inverse_cholesky(H, n, rel, mean, A) == 0;
  if (!ok) {
    free(A);
    free(E);
    return glq_error(GLQ_ENUMERIC, "hif4 ldlq: Hessian (%lld x %lld) is not positive definite even with damping %g",
                     (long long)n, (long long)n, rel / 10.0);
  }
  st->damp = rel / 10.0;
  float *U = H; /* H is no longer needed */
  for (int64_t i = 0; i < n * n; i++) U[i] = (float)A[i];
  free(A);
  int64_t nb = glq_hif4_nblocks(n);
  for (int64_t j1 = 0; j1 < n; j1 += BLK) {
    int64_t len = n - j1 < BLK ? n - j1 : BLK, j2 = j1 + len;
    ldlq_ctx c = {W, U, E, n, nb, j1, len, out};
    glq_parallel_for(m, 4, ldlq_block, &c);
    if (j2 < n) /* lazy update of the later columns: W[:, j2:] -= E · U[j1:j2, j2:] */
      glq_sgemm(0, 0, m, n - j2, len, -1.0f, E, BLK, U + j1 * n + j2, n, 1.0f, W + j2, n);
  }
  free(E);
  return GLQ_OK;
}

/* 2-D float tensor as an owned contiguous f32 copy (malloc'd). */
static int f32_copy(const glq_tensor *t, const char *what, float **out) {
  *out = NULL;
  if (!t->st || t->ndim != 2 || !glq_dtype_is_float(t->dtype))
    return glq_error(GLQ_EINVAL, "hif4: %s must be a 2-D float tensor", what);
  glq_tensor c;
  int rc = glq_tensor_to(t, GLQ_F32, &c);
  if (rc) return rc;
  size_t bytes = (size_t)glq_tensor_numel(&c) * sizeof(float);
  if ((*out = malloc(bytes ? bytes : 1))) memcpy(*out, glq_tensor_data(&c), bytes);
  glq_tensor_release(&c);
  return *out ? GLQ_OK : glq_error(GLQ_ENOMEM, "hif4: out of memory copying %s", what);
}

/* The Hessian for LDLQ: f32 (n × n) as given, or rotated like the weight's rows (k × k, rht.h). */
static int prepare_hessian(const glq_tensor *t, int64_t n, const float *sv, float **out) {
  *out = NULL;
  if (!t->st || t->ndim != 2 || !glq_dtype_is_float(t->dtype) || t->shape[0] != n || t->shape[1] != n)
    return glq_error(GLQ_EINVAL, "hif4: hessian must be a %lld x %lld float tensor (the weight's in dimension), got %s %lld-d %lld x %lld",
                     (long long)n, (long long)n, t->st ? glq_dtype_name(t->dtype) : "empty", (long long)t->ndim,
                     (long long)(t->ndim > 0 ? t->shape[0] : 0), (long long)(t->ndim > 1 ? t->shape[1] : 0));
  glq_tensor d;
  int rc = glq_tensor_to(t, GLQ_F64, &d);
  if (rc) return rc;
  const double *h = glq_tensor_data(&d);
  for (int64_t i = 0; i < n * n && !rc; i++)
    if (!isfinite(h[i]))
      rc = glq_error(GLQ_ENUMERIC, "hif4: hessian has a non-finite value %g at (%lld, %lld)", h[i], (long long)(i / n),
                     (long long)(i % n));
  int64_t k = sv ? glq_rht_pad(n) : n;
  if (!rc && !(*out = malloc((size_t)(k * k) * sizeof(float)))) rc = glq_error(GLQ_ENOMEM, "hif4: out of memory for the hessian");
  if (!rc && sv) rc = glq_rht_hessian(h, n, 0.0, sv, GLQ_HADAMARD_DEFAULT, *out);
  else if (!rc)
    for (int64_t i = 0; i < n * n; i++) (*out)[i] = (float)h[i];
  glq_tensor_release(&d);
  if (rc) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

int glq_hif4_quantize_weight(const glq_tensor *w, const glq_hif4_wopts *o, glq_hif4_fields *out, glq_tensor *signs,
                             glq_hif4_wstats *stats) {
  memset(out, 0, sizeof *out);
  memset(signs, 0, sizeof *signs);
  memset(stats, 0, sizeof *stats);
  float *W = NULL, *H = NULL, *sv = NULL;
  int rc = f32_copy(w, "weight", &W);
  if (rc) return rc;
  int64_t m = w->shape[0], n = w->shape[1], k = o->rht ? glq_rht_pad(n) : n, bad;
  if ((bad = first_nonfinite(W, m * n)) >= 0)
    rc = glq_error(GLQ_ENUMERIC, "hif4: weight has a non-finite value %g at (%lld, %lld)", W[bad],
                   (long long)(bad / n), (long long)(bad % n));
  if (!rc && o->rht && !(rc = glq_tensor_new(GLQ_F32, 1, &k, signs))) {
    sv = glq_tensor_data(signs);
    glq_rht_signs(o->seed, o->name, "SV", k, sv);
    float *wt = malloc((size_t)(m * k) * sizeof(float));
    rc = wt ? glq_rht_input(W, m, n, sv, GLQ_HADAMARD_DEFAULT, wt) : glq_error(GLQ_ENOMEM, "hif4: out of memory rotating the weight");
    free(W);
    W = wt;
  }
  if (!rc && o->hessian) rc = prepare_hessian(o->hessian, n, sv, &H);
  int64_t shape[2] = {m, n};
  if (!rc) rc = glq_hif4_fields_new(2, shape, 1, out); /* ceil(k/64) == ceil(n/64) units per row */
  if (!rc) {
    glq_hif4_buf b = glq_hif4_fields_buf(out);
    if (H) rc = ldlq(W, m, k, H, o->damp > 0 ? o->damp : 0.01, &b, stats);
    else rc = glq_hif4_encode(W, GLQ_F32, m, k, k, 0, &b, &bad);
  }
  free(W);
  free(H);
  if (rc) {
    glq_hif4_fields_release(out);
    glq_tensor_release(signs);
    if (o->rht) glq_error_prefix("hif4 rht");
    return rc;
  }
  stats->bits_per_weight = (double)(m * glq_hif4_nblocks(n) * REC * 8 + (o->rht ? k : 0)) / (double)(m * n);
  return GLQ_OK;
}

int glq_hif4_proxy_loss(const glq_tensor *a, const glq_tensor *b, const glq_tensor *h, double *loss) {
  float *A = NULL, *B = NULL, *H = NULL;
  int rc = f32_copy(a, "proxy loss weight a", &A);
  if (!rc) rc = f32_copy(b, "proxy loss weight b", &B);
  if (!rc) rc = f32_copy(h, "proxy loss hessian", &H);
  int64_t m = a->shape[0], n = a->shape[1];
  if (!rc && (b->shape[0] != m || b->shape[1] != n || h->shape[0] != n || h->shape[1] != n))
    rc = glq_error(GLQ_EINVAL, "hif4 proxy loss: shapes %lldx%lld, %lldx%lld and hessian %lldx%lld do not match",
                   (long long)m, (long long)n, (long long)b->shape[0], (long long)b->shape[1], (long long)h->shape[0],
                   (long long)h->shape[1]);
  double *D = NULL, *Hd = NULL, *DH = NULL;
  if (!rc) {
    D = malloc((size_t)(m * n) * sizeof(double));
    Hd = malloc((size_t)(n * n) * sizeof(double));
    DH = malloc((size_t)(m * n) * sizeof(double));
    if (!D || !Hd || !DH) rc = glq_error(GLQ_ENOMEM, "hif4 proxy loss: out of memory");
  }
  if (!rc) {
    for (int64_t i = 0; i < m * n; i++) D[i] = (double)A[i] - (double)B[i];
    for (int64_t i = 0; i < n * n; i++) Hd[i] = H[i];
    glq_dgemm(0, 0, m, n, n, 1.0, D, n, Hd, n, 0.0, DH, n);
    double s = 0.0;
    for (int64_t i = 0; i < m * n; i++) s += DH[i] * D[i];
    *loss = s;
  }
  free(A);
  free(B);
  free(H);
  free(D);
  free(Hd);
  free(DH);
  return rc;
}
