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

/* nx x rows × nw weight rows held in registers; nx, nw and bf16 are constants after inlining. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
tile(const float *x, int64_t ldx, int nx, const void *w, int bf16, int64_t ldw, int nw, int64_t n,
     const float *bias, float *y, int64_t ldy) {
  size_t es = bf16 ? 2 : 4;
  int64_t n8 = n & ~(int64_t)7;
  __m256 acc[TX][TW];
#pragma GCC unroll 4
  for (int i = 0; i < nx; i++)
#pragma GCC unroll 4
    for (int j = 0; j < nw; j++) acc[i][j] = _mm256_setzero_ps();
  for (int64_t k = 0; k < n8; k += 8) {
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
      for (int64_t j = j0; j < j1;) {
        const void *wj = (const char *)w + (size_t)j * (size_t)ldw * es;
        const float *bj = bias ? bias + j : NULL;
        int full = j + TW <= j1;
        /* one switch case per constant shape so the tile is fully unrolled */
        switch ((nx - 1) * 4 + (full ? 2 : 0) + bf16) {
        case 0: tile(xi, ldx, 1, wj, 0, ldw, 1, n, bj, yi + j, ldy); break;
        case 1: tile(xi, ldx, 1, wj, 1, ldw, 1, n, bj, yi + j, ldy); break;
        case 2: tile(xi, ldx, 1, wj, 0, ldw, TW, n, bj, yi + j, ldy); break;
        case 3: tile(xi, ldx, 1, wj, 1, ldw, TW, n, bj, yi + j, ldy); break;
        case 4: tile(xi, ldx, 2, wj, 0, ldw, 1, n, bj, yi + j, ldy); break;
        case 5: tile(xi, ldx, 2, wj, 1, ldw, 1, n, bj, yi + j, ldy); break;
        case 6: tile(xi, ldx, 2, wj, 0, ldw, TW, n, bj, yi + j, ldy); break;
        case 7: tile(xi, ldx, 2, wj, 1, ldw, TW, n, bj, yi + j, ldy); break;
        case 8: tile(xi, ldx, 3, wj, 0, ldw, 1, n, bj, yi + j, ldy); break;
        case 9: tile(xi, ldx, 3, wj, 1, ldw, 1, n, bj, yi + j, ldy); break;
        case 10: tile(xi, ldx, 3, wj, 0, ldw, TW, n, bj, yi + j, ldy); break;
        default: tile(xi, ldx, 3, wj, 1, ldw, TW, n, bj, yi + j, ldy); break;
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
  /* keep at least ~64K multiply-adds per thread so small layers stay on one thread */
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
