/* linalg.c - thin BLAS/LAPACKE wrappers and the block LDL used by LDLQ. */
#include "linalg.h"
#include "../core/error.h"
#include "../core/pool.h"
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>

#define HESS_CHUNK 256 /* rows converted to f64 per dsyrk call */

int glq_blas_threads(int n) {
  int old = openblas_get_num_threads();
  openblas_set_num_threads(n);
  return old;
}

void glq_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)m,
              (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void glq_dgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double *a, int64_t lda,
               const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)m,
              (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void glq_ssyrk_tn(int64_t n, int64_t k, const float *a, float *g) {
  if (n <= 0) return;
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)n, (blasint)k, 1.0f, a, (blasint)n, 0.0f, g, (blasint)n);
}

void glq_dsyrk_tn_acc(int64_t n, int64_t k, const double *a, double *h) {
  if (n <= 0 || k <= 0) return;
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)n, (blasint)k, 1.0, a, (blasint)n, 1.0, h, (blasint)n);
}

int glq_hessian_accumulate(double *h, int64_t n, const float *x, int64_t rows) {
  if (n <= 0 || rows < 0) return glq_error(GLQ_EINVAL, "hessian_accumulate: bad shape n=%lld rows=%lld", (long long)n, (long long)rows);
  if (rows == 0) return 0;
  int64_t chunk = rows < HESS_CHUNK ? rows : HESS_CHUNK;
  double *buf = malloc((size_t)(chunk * n) * sizeof *buf);
  if (!buf) return glq_error(GLQ_ENOMEM, "hessian_accumulate: out of memory (%lld x %lld)", (long long)chunk, (long long)n);
  /* dsyrk updates the upper triangle only (row-major); the lower one is mirrored afterwards */
  for (int64_t r = 0; r < rows; r += chunk) {
    int64_t k = rows - r < chunk ? rows - r : chunk;
    for (int64_t i = 0; i < k * n; i++) buf[i] = x[r * n + i];
    glq_dsyrk_tn_acc(n, k, buf, h);
  }
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < i; j++) h[i * n + j] = h[j * n + i];
  free(buf);
  return 0;
}

int glq_cholesky(double *a, int64_t n) {
  if (n <= 0) return glq_error(GLQ_EINVAL, "cholesky: bad size %lld", (long long)n);
  /* the row-major lower factor is LAPACK's column-major upper factor of the same memory */
  lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', (lapack_int)n, a, (lapack_int)n);
  if (info > 0) return glq_error(GLQ_ENUMERIC, "cholesky: matrix not positive definite (pivot %d of %lld)", (int)info, (long long)n);
  if (info < 0) return glq_error(GLQ_EINVAL, "cholesky: LAPACK argument %d invalid", (int)-info);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = i + 1; j < n; j++) a[i * n + j] = 0;
  return 0;
}

int glq_cholesky_inverse_upper(double *a, int64_t n) {
  if (n <= 0) return glq_error(GLQ_EINVAL, "cholesky_inverse_upper: bad size %lld", (long long)n);
  const char *step = "Cholesky";
  lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)n, a, (lapack_int)n);
  if (!info) step = "inverse", info = LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', (lapack_int)n, a, (lapack_int)n);
  if (!info) step = "Cholesky of the inverse", info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)n, a, (lapack_int)n);
  if (info > 0)
    return glq_error(GLQ_ENUMERIC, "cholesky_inverse_upper: %s failed at pivot %d of %lld (not positive definite)", step,
                     (int)info, (long long)n);
  if (info < 0) return glq_error(GLQ_EINVAL, "cholesky_inverse_upper: LAPACK argument %d invalid", (int)-info);
  return 0;
}

typedef struct {
  const double *c;
  int64_t n;
  int b;
  float *l, *d;
} ldl_ctx;

/* block columns [k0, k1): L[:, blk] = C[:, blk]·C_kk⁻¹ below the diagonal block, D_k = C_kk·C_kkᵀ */
static void ldl_range(void *vc, int64_t k0, int64_t k1) {
  ldl_ctx *x = vc;
  const int64_t n = x->n;
  const int b = x->b;
  for (int64_t k = k0; k < k1; k++) {
    const int64_t c0 = k * b;
    const double *ckk = x->c + c0 * n + c0;
    for (int i = 0; i < b; i++)
      for (int j = 0; j < b; j++) {
        double s = 0;
        for (int t = 0; t <= (i < j ? i : j); t++) s += ckk[i * n + t] * ckk[j * n + t];
        x->d[k * b * b + i * b + j] = (float)s;
      }
    for (int64_t r = 0; r < n; r++) {
      float *lr = x->l + r * n + c0;
      if (r < c0) {
        for (int j = 0; j < b; j++) lr[j] = 0;
      } else if (r < c0 + b) {
        for (int j = 0; j < b; j++) lr[j] = (float)(r - c0 == j);
      } else {
        /* solve y·C_kk = C[r, blk] by back substitution (C_kk lower) */
        const double *cr = x->c + r * n + c0;
        double y[64];
        for (int j = b - 1; j >= 0; j--) {
          double s = cr[j];
          for (int i = j + 1; i < b; i++) s -= y[i] * ckk[i * n + j];
          y[j] = s / ckk[j * n + j];
        }
        for (int j = 0; j < b; j++) lr[j] = (float)y[j];
      }
    }
  }
}

int glq_block_ldl(const double *c, int64_t n, int b, float *l, float *d) {
  if (b < 1 || b > 64 || n <= 0 || n % b)
    return glq_error(GLQ_EINVAL, "block_ldl: size %lld is not a positive multiple of the block size %d (1..64)", (long long)n, b);
  for (int64_t i = 0; i < n; i++)
    if (!(c[i * n + i] > 0) || !isfinite(c[i * n + i]))
      return glq_error(GLQ_ENUMERIC, "block_ldl: Cholesky factor has a non-positive pivot at %lld", (long long)i);
  ldl_ctx x = {c, n, b, l, d};
  glq_parallel_for(n / b, 4, ldl_range, &x);
  return 0;
}
