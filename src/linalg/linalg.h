/* linalg.h - every BLAS/LAPACK call of the library (no other .c calls cblas_* or LAPACKE_* directly):
 * GEMM, Hessian accumulation in f64, Cholesky, the factor of an inverse, block LDL. Row-major throughout.
 * Determinism: OpenBLAS splits level-3 work over output rows/columns only (never over the inner
 * dimension), so every output element is summed in the same order whatever its thread count;
 * spec/linalg_spec.lua checks this for the shapes we use (OPENBLAS_NUM_THREADS=1 vs 2). */
#ifndef GLQ_LINALG_H
#define GLQ_LINALG_H
#include <stdint.h>

/* Set OpenBLAS's thread count (n >= 1) and return the previous one. Callers that run BLAS from
 * several pool threads at once set 1 for that time: OpenBLAS's own threads would fight the pool's. */
int glq_blas_threads(int n);

/* C (m x n, ldc) = alpha * op(A) * op(B) + beta * C, f32; op(X) = Xᵀ when the flag is set. */
void glq_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

/* The same in f64. */
void glq_dgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double *a, int64_t lda,
               const double *b, int64_t ldb, double beta, double *c, int64_t ldc);

/* G (n x n f32) = Aᵀ·A for A (k x n f32); only the upper triangle of g is written. */
void glq_ssyrk_tn(int64_t n, int64_t k, const float *a, float *g);

/* H (n x n f64) += Aᵀ·A for A (k x n f64); only the upper triangle of h is updated. */
void glq_dsyrk_tn_acc(int64_t n, int64_t k, const double *a, double *h);

/* H (n x n f64, both triangles kept equal) += Xᵀ·X for X (rows x n f32); sums in f64, 256 rows per
 * glq_dsyrk_tn_acc. */
int glq_hessian_accumulate(double *h, int64_t n, const float *x, int64_t rows);

/* In place lower Cholesky a = C·Cᵀ (f64, n x n); the strict upper triangle is zeroed.
 * GLQ_ENUMERIC (message names the failing pivot) if a is not positive definite. */
int glq_cholesky(double *a, int64_t n);

/* In place: a (n x n f64, symmetric, both triangles set) -> U, upper triangular when read row-major
 * (the strict lower part is left as scratch), with a⁻¹ = Uᵀ·U: lower Cholesky of a, the inverse from it,
 * lower Cholesky of the inverse (column-major LAPACK, whose lower factor is U row-major).
 * GLQ_ENUMERIC if a (or its inverse, numerically) is not positive definite. */
int glq_cholesky_inverse_upper(double *a, int64_t n);

/* Block LDL of an SPD matrix from its lower Cholesky factor c (f64, n x n, n % b == 0):
 * A = L·blkdiag(D)·Lᵀ with L unit block-lower-triangular (f32 n x n, identity diagonal blocks)
 * and D the n/b diagonal blocks (f32, b x b each, stored consecutively). c is left unchanged. */
int glq_block_ldl(const double *c, int64_t n, int b, float *l, float *d);

#endif
