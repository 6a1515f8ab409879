/* dense_linear.c - dense f32/bf16 linear layer; see dense_linear.h for the determinism contract. */
#include "dense_linear.h"
#include "../core/pool.h"
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define TX 3   /* x rows per register tile */
#define TW 4   /* weight rows per register tile */
#define JB 64  /* weight rows per cache block (stays in L2 while every x row passes) */
#define PF_MIN_ROW 1024 /* bytes per weight row from which tiles prefetch the next one */
#define TILE8_MAX_ROW 3072 /* longer rows: 8 of them (and the 8 prefetched) would not fit in L1 */

typedef struct {
  glq_linear base;
  glq_tensor w;     /* one reference; contiguous f32 or bf16 */
  float *bias;      /* owned copy or NULL */
} dense_t;

static inline float wval(const void *w, int bf16, int64_t k) {
  return bf16 ? glq_bf16_to_f32(((const uint16_t *)w)[k]) : ((const float *)w)[k];
}

/* The dot-product tail past the last full 8-lane block; shared by every path. */
static float dot_tail(const float *x, const void *w, int bf16, int64_t k, int64_t n) {
  float s = 0.0f;
  for (; k < n; k++) s += x[k] * wval(w, bf16, k);
  return s;
}

/* Portable path: 8 partial sums per output, combined pairwise in a fixed order. */
static void gemm_portable(const float *x, int64_t ldx, int64_t B, const void *w, int bf16,
                          int64_t ldw, int64_t out, int64_t n, const float *bias, float *y,
                          int64_t ldy) {
  size_t es = bf16 ? 2 : 4;
  int64_t n8 = n & ~(int64_t)7;
  for (int64_t j = 0; j < out; j++) {
    const void *wr = (const char *)w + (size_t)j * (size_t)ldw * es;
    for (int64_t i = 0; i < B; i++) {
      const float *xr = x + i * ldx;
      float a[8] = {0};
      for (int64_t k = 0; k < n8; k += 8)
        for (int l = 0; l < 8; l++) a[l] += xr[k + l] * wval(wr, bf16, k + l);
      float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
      s += dot_tail(xr, wr, bf16, n8, n);
      y[i * ldy + j] = s + (bias ? bias[j] : 0.0f);
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static inline __m256 load8(const void *w, int bf16, int64_t k) {
  if (bf16) {
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  return _mm256_loadu_ps((const float *)w + k);
}

/* Same pairing as the portable path: (0+4, 2+6), (1+5, 3+7). */
__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* Tiles prefetch the weight rows of the next tile (pf, or NULL) as fast as they consume their own,
 * so a thread's row streams stay ahead of memory: on the 2-core Zen 4 machine one thread streams a
 * 113 MB head at ~33 GB/s with them, ~20 GB/s with the hardware prefetcher alone. Only rows that
 * come from memory get them: long rows (not attention's cached keys), on the first x rows' pass over
 * a block (later passes find it in L2). Prefetches do not change the arithmetic. */
static inline const char *next_rows(const void *wj, int rows, int64_t j, int64_t out, int64_t ldw, int64_t n,
                                    size_t es, int first_pass) {
  int ok = first_pass && ldw == n && n * (int64_t)es >= PF_MIN_ROW && j + 2 * rows <= out;
  return ok ? (const char *)wj + (size_t)rows * (size_t)ldw * es : NULL;
}

/* the part of the next tile (rows weight rows) that matches columns [k, k+8) of this one */
static inline __attribute__((always_inline)) void prefetch_step(const char *pf, int64_t k, size_t es, int rows) {
  if (!pf) return;
  for (size_t off = ((size_t)k * es * rows + 63) & ~(size_t)63; off < (size_t)(k + 8) * es * rows; off += 64)
    _mm_prefetch(pf + off, _MM_HINT_T0);
}

/* nx x rows × nw weight rows held in registers; nx, nw and bf16 are constants after inlining. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
tile(const float *x, int64_t ldx, int nx, const void *w, int bf16, int64_t ldw, int nw, int64_t n,
     const float *bias, float *y, int64_t ldy, const char *pf) {
  size_t es = bf16 ? 2 : 4;
  int64_t n8 = n & ~(int64_t)7;
  __m256 acc[TX][TW];
#pragma GCC unroll 4
  for (int i = 0; i < nx; i++)
#pragma GCC unroll 4
    for (int j = 0; j < nw; j++) acc[i][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < n8; k += 8) {
    prefetch_step(pf, k, es, TW);
    __m256 xv[TX];
#pragma GCC unroll 4
    for (int i = 0; i < nx; i++) xv[i] = _mm256_loadu_ps(x + i * ldx + k);
#pragma GCC unroll 4
    for (int j = 0; j < nw; j++) {
      __m256 wv = load8((const char *)w + (size_t)j * (size_t)ldw * es, bf16, k);
#pragma GCC unroll 4
      for (int i = 0; i < nx; i++) acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  for (int i = 0; i < nx; i++)
    for (int j = 0; j < nw; j++) {
      const void *wr = (const char *)w + (size_t)j * (size_t)ldw * es;
      float s = hsum8(acc[i][j]) + dot_tail(x + i * ldx, wr, bf16, n8, n);
      y[i * ldy + j] = s + (bias ? bias[j] : 0.0f);
    }
}

/* One x row against eight short weight rows (more chains in flight than the 4-row tile). The eight lane
 * sums are reduced together with hsum8's pairing, ((0+4) + (2+6)) + ((1+5) + (3+7)) per row, and
 * the tail and bias are added in the same order, so every output has the 4-row tile's bits. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
tile8(const float *x, const void *w, int bf16, int64_t ldw, int64_t n, const float *bias, float *y,
      const char *pf) {
  size_t es = bf16 ? 2 : 4;
  int64_t n8 = n & ~(int64_t)7;
  __m256 acc[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < n8; k += 8) {
    prefetch_step(pf, k, es, 8);
    __m256 xv = _mm256_loadu_ps(x + k);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
      acc[j] = _mm256_fmadd_ps(xv, load8((const char *)w + (size_t)j * (size_t)ldw * es, bf16, k), acc[j]);
  }
  __m256 u[4], v[2];
#pragma GCC unroll 4
  for (int j = 0; j < 4; j++) /* rows 2j | 2j+1: lanes (0+4, 1+5, 2+6, 3+7) */
    u[j] = _mm256_add_ps(_mm256_permute2f128_ps(acc[2 * j], acc[2 * j + 1], 0x20),
                         _mm256_permute2f128_ps(acc[2 * j], acc[2 * j + 1], 0x31));
#pragma GCC unroll 2
  for (int j = 0; j < 2; j++) /* rows 4j, 4j+2 | 4j+1, 4j+3: ((0+4)+(2+6), (1+5)+(3+7)) pairs */
    v[j] = _mm256_add_ps(_mm256_shuffle_ps(u[2 * j], u[2 * j + 1], 0x44), _mm256_shuffle_ps(u[2 * j], u[2 * j + 1], 0xEE));
  __m256 r = _mm256_permutevar8x32_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  float t[8];
  for (int j = 0; j < 8; j++) t[j] = dot_tail(x, (const char *)w + (size_t)j * (size_t)ldw * es, bf16, n8, n);
  r = _mm256_add_ps(r, _mm256_loadu_ps(t));
  _mm256_storeu_ps(y, _mm256_add_ps(r, bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps()));
}

__attribute__((target("avx2,fma"))) static void
gemm_avx2(const float *x, int64_t ldx, int64_t B, const void *w, int bf16, int64_t ldw,
          int64_t out, int64_t n, const float *bias, float *y, int64_t ldy) {
  size_t es = bf16 ? 2 : 4;
  for (int64_t j0 = 0; j0 < out; j0 += JB) {
    int64_t j1 = j0 + JB < out ? j0 + JB : out;
    for (int64_t i = 0; i < B; i += TX) {
      int nx = B - i < TX ? (int)(B - i) : TX;
      const float *xi = x + i * ldx;
      float *yi = y + i * ldy;
      int64_t j = j0;
      if (nx == 1 && n * (int64_t)es <= TILE8_MAX_ROW)
        for (; j + 8 <= j1; j += 8) {
          const void *wj = (const char *)w + (size_t)j * (size_t)ldw * es;
          const char *pf = next_rows(wj, 8, j, out, ldw, n, es, i == 0);
          if (bf16) tile8(xi, wj, 1, ldw, n, bias ? bias + j : NULL, yi + j, pf);
          else tile8(xi, wj, 0, ldw, n, bias ? bias + j : NULL, yi + j, pf);
        }
      while (j < j1) {
        const void *wj = (const char *)w + (size_t)j * (size_t)ldw * es;
        const float *bj = bias ? bias + j : NULL;
        int full = j + TW <= j1;
        const char *pf = full ? next_rows(wj, TW, j, out, ldw, n, es, i == 0) : NULL;
        /* one switch case per constant shape so the tile is fully unrolled */
        switch ((nx - 1) * 4 + (full ? 2 : 0) + bf16) {
        case 0: tile(xi, ldx, 1, wj, 0, ldw, 1, n, bj, yi + j, ldy, pf); break;
        case 1: tile(xi, ldx, 1, wj, 1, ldw, 1, n, bj, yi + j, ldy, pf); break;
        case 2: tile(xi, ldx, 1, wj, 0, ldw, TW, n, bj, yi + j, ldy, pf); break;
        case 3: tile(xi, ldx, 1, wj, 1, ldw, TW, n, bj, yi + j, ldy, pf); break;
        case 4: tile(xi, ldx, 2, wj, 0, ldw, 1, n, bj, yi + j, ldy, pf); break;
        case 5: tile(xi, ldx, 2, wj, 1, ldw, 1, n, bj, yi + j, ldy, pf); break;
        case 6: tile(xi, ldx, 2, wj, 0, ldw, TW, n, bj, yi + j, ldy, pf); break;
        case 7: tile(xi, ldx, 2, wj, 1, ldw, TW, n, bj, yi + j, ldy, pf); break;
        case 8: tile(xi, ldx, 3, wj, 0, ldw, 1, n, bj, yi + j, ldy, pf); break;
        case 9: tile(xi, ldx, 3, wj, 1, ldw, 1, n, bj, yi + j, ldy, pf); break;
        case 10: tile(xi, ldx, 3, wj, 0, ldw, TW, n, bj, yi + j, ldy, pf); break;
        default: tile(xi, ldx, 3, wj, 1, ldw, TW, n, bj, yi + j, ldy, pf); break;
        }
        j += full ? TW : 1;
      }
    }
  }
}
#endif

void glq_gemm_nt(const float *x, int64_t ldx, int64_t B, const void *w, glq_dtype wdt,
                 int64_t ldw, int64_t out, int64_t n, const float *bias, float *y, int64_t ldy) {
  int bf16 = wdt == GLQ_BF16;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    gemm_avx2(x, ldx, B, w, bf16, ldw, out, n, bias, y, ldy);
    return;
  }
#endif
  gemm_portable(x, ldx, B, w, bf16, ldw, out, n, bias, y, ldy);
}

#define Q8_BLOCK 34 /* bytes per 32 weights: f16 scale, 32 int8 */

static float q8_scale(const uint8_t *b) { return glq_f16_to_f32((uint16_t)(b[0] | b[1] << 8)); }

static void gemv_q8_0_portable(const float *x, const uint8_t *blocks, int64_t j0, int64_t j1, int64_t n, float *y) {
  int64_t nb = n / 32;
  for (int64_t j = j0; j < j1; j++) {
    const uint8_t *row = blocks + (size_t)j * (size_t)nb * Q8_BLOCK;
    float a[8] = {0};
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *blk = row + (size_t)b * Q8_BLOCK;
      float d = q8_scale(blk);
      for (int k = 0; k < 32; k++) a[k & 7] += x[b * 32 + k] * ((float)(int8_t)blk[2 + k] * d);
    }
    float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    y[j] = (s + 0.0f) + 0.0f; /* the f32 path's (empty) tail and (absent) bias */
  }
}

#if defined(__x86_64__)
/* the block's f16 scale, converted by the F16C instruction (the same exact value) */
static inline __attribute__((always_inline, target("avx2,fma,f16c"))) float q8_scale_f16c(const uint8_t *b) {
  uint16_t h;
  memcpy(&h, b, 2);
  return _cvtsh_ss(h);
}

/* nr (1 or 4, constant after inlining) rows at r; the per-row arithmetic is the portable path's
 * in 8-lane vectors, which is the f32 tile's. */
static inline __attribute__((always_inline, target("avx2,fma,f16c"))) void
q8_rows(const float *x, const uint8_t *r, size_t rb, int64_t nb, int nr, float *y) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t b = 0; b < nb; b++) {
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) _mm_prefetch((const char *)r + (size_t)(4 * nr + i) * rb + (size_t)b * Q8_BLOCK, _MM_HINT_T0);
    __m256 xv[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) xv[k] = _mm256_loadu_ps(x + b * 32 + 8 * k);
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) {
      const uint8_t *blk = r + (size_t)i * rb + (size_t)b * Q8_BLOCK;
      __m256 d = _mm256_set1_ps(q8_scale_f16c(blk));
#pragma GCC unroll 4
      for (int k = 0; k < 4; k++) {
        __m128i q = _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * k));
        acc[i] = _mm256_fmadd_ps(xv[k], _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d), acc[i]);
      }
    }
  }
  for (int i = 0; i < nr; i++) y[i] = (hsum8(acc[i]) + 0.0f) + 0.0f; /* the f32 path's empty tail, absent bias */
}

__attribute__((target("avx2,fma,f16c"))) static void
gemv_q8_0_avx2(const float *x, const uint8_t *blocks, int64_t j0, int64_t j1, int64_t n, float *y) {
  int64_t nb = n / 32;
  size_t rb = (size_t)nb * Q8_BLOCK;
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) q8_rows(x, blocks + (size_t)j * rb, rb, nb, 4, y + j);
  for (; j < j1; j++) q8_rows(x, blocks + (size_t)j * rb, rb, nb, 1, y + j);
}
#endif

void glq_gemv_q8_0(const float *x, const uint8_t *blocks, int64_t j0, int64_t j1, int64_t n, float *y) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    gemv_q8_0_avx2(x, blocks, j0, j1, n, y);
    return;
  }
#endif
  gemv_q8_0_portable(x, blocks, j0, j1, n, y);
}

typedef struct {
  const dense_t *d;
  const float *x;
  int64_t B;
  float *y;
} fwd_ctx;

static void fwd_range(void *ctx, int64_t j0, int64_t j1) {
  const fwd_ctx *c = ctx;
  const dense_t *d = c->d;
  int64_t in = d->base.in, out = d->base.out;
  const char *w = (const char *)glq_tensor_data(&d->w) + (size_t)j0 * (size_t)in * glq_dtype_size(d->w.dtype);
  glq_gemm_nt(c->x, in, c->B, w, d->w.dtype, in, j1 - j0, in, d->bias ? d->bias + j0 : NULL,
              c->y + j0, out);
}

static int dense_forward(glq_linear *l, const float *x, int64_t B, float *y) {
  dense_t *d = (dense_t *)l;
  if (B < 0) return glq_error(GLQ_EINVAL, "dense linear: batch %lld < 0", (long long)B);
  fwd_ctx c = {d, x, B, y};
  /* keep at least ~64K multiply-adds per thread so small layers stay on one thread; one long range
   * per thread streams better than chunks (each chunk would restart the prefetch streams) */
  int64_t work = l->in * (B > 0 ? B : 1);
  int64_t min_rows = 65536 / (work > 0 ? work : 1);
  glq_parallel_for(l->out, min_rows < TW ? TW : min_rows, fwd_range, &c);
  return GLQ_OK;
}

static int dense_dequantize(const glq_linear *l, float *w) {
  const dense_t *d = (const dense_t *)l;
  glq_convert(glq_tensor_data(&d->w), d->w.dtype, w, GLQ_F32, l->in * l->out);
  return GLQ_OK;
}

static size_t dense_stored_bytes(const glq_linear *l) {
  const dense_t *d = (const dense_t *)l;
  return (size_t)(l->in * l->out) * glq_dtype_size(d->w.dtype) + (d->bias ? (size_t)l->out * 4 : 0);
}

static void dense_destroy(glq_linear *l) {
  dense_t *d = (dense_t *)l;
  glq_tensor_release(&d->w);
  free(d->bias);
  free(d);
}

static const glq_linear_vt dense_vt = {"dense", dense_forward, dense_dequantize, dense_stored_bytes,
                                       dense_destroy};

int glq_dense_linear_weight_of(const glq_linear *l, const void **w, glq_dtype *dtype) {
  if (!l || l->vt != &dense_vt) return glq_error(GLQ_EINVAL, "dense linear: not a dense layer");
  const dense_t *d = (const dense_t *)l;
  *w = glq_tensor_data(&d->w);
  *dtype = d->w.dtype;
  return GLQ_OK;
}

int glq_dense_linear_new(const glq_tensor *w, const glq_tensor *bias, glq_linear **out) {
  *out = NULL;
  if (!w || !w->st || w->ndim != 2 || !glq_dtype_is_float(w->dtype))
    return glq_error(GLQ_EINVAL, "dense linear: weight must be a 2-D float tensor");
  int64_t o = w->shape[0], in = w->shape[1];
  if (o < 1 || in < 1) return glq_error(GLQ_EINVAL, "dense linear: empty weight %lldx%lld", (long long)o, (long long)in);
  if (bias && (!bias->st || !glq_dtype_is_float(bias->dtype) || glq_tensor_numel(bias) != o))
    return glq_error(GLQ_EINVAL, "dense linear: bias must be a float tensor of %lld elements", (long long)o);
  dense_t *d = calloc(1, sizeof *d);
  if (!d) return glq_error(GLQ_ENOMEM, "dense linear: out of memory");
  int rc;
  if ((w->dtype == GLQ_F32 || w->dtype == GLQ_BF16) && glq_tensor_is_contiguous(w)) {
    d->w = *w;
    glq_tensor_retain(&d->w);
    rc = GLQ_OK;
  } else {
    rc = glq_tensor_to(w, GLQ_F32, &d->w);
  }
  if (rc == GLQ_OK && bias) {
    glq_tensor b;
    d->bias = malloc((size_t)o * sizeof(float));
    if (!d->bias) rc = glq_error(GLQ_ENOMEM, "dense linear: out of memory");
    else if ((rc = glq_tensor_to(bias, GLQ_F32, &b)) == GLQ_OK) {
      memcpy(d->bias, glq_tensor_data(&b), (size_t)o * sizeof(float));
      glq_tensor_release(&b);
    }
  }
  d->base.vt = &dense_vt;
  d->base.in = in;
  d->base.out = o;
  d->base.bias = d->bias;
  if (rc != GLQ_OK) {
    if (d->w.st) glq_tensor_release(&d->w);
    free(d->bias);
    free(d);
    return rc;
  }
  *out = &d->base;
  return GLQ_OK;
}
