/* hadamard.h - orthonormal Hadamard-type transforms along the last dimension, without storage padding.
 * Powers of two use the Sylvester FWHT (symmetric, involutive). Other multiples of 8 use a
 * Kronecker product with a small Hadamard matrix (or a block-diagonal fallback); see the .c file
 * and docs/hadamard.md for which sizes get which construction. Sizes that are neither a power of
 * two nor a multiple of 8 are rejected: the caller pads to a multiple of 8. */
#ifndef GLQ_HADAMARD_H
#define GLQ_HADAMARD_H
#include <stdint.h>

typedef struct glq_hadamard glq_hadamard; /* immutable plan for one dimension; cached, thread-safe */

/* Which construction a plan uses. The two agree (one Sylvester FWHT) when n is a power of two. */
typedef enum {
  GLQ_HADAMARD_DEFAULT = 0,       /* ours: FWHT, H_p (x) FWHT, or its block fallback ("glq-hadamard-v1") */
  GLQ_HADAMARD_GLQ_BLOCKDIAG = 1  /* glq >= 0.2.9: blocks = binary expansion of n, largest first, each an
                                   * orthonormal Sylvester FWHT (any n >= 1; blocks below 8 when 8 ∤ n) */
} glq_hadamard_kind;

/* The plan for dimension n (n >= 1) of the given kind (GLQ_HADAMARD_DEFAULT: ours), cached per kind.
 * Fails with a message for unsupported n. */
int glq_hadamard_plan(int64_t n, glq_hadamard_kind kind, const glq_hadamard **out);
int64_t glq_hadamard_dim(const glq_hadamard *h);
int glq_hadamard_is_symmetric(const glq_hadamard *h);
/* x (rows × n, row-major) in place: each row x_i <- H x_i, or Hᵀ x_i when transpose != 0. Orthonormal.
 * Parallel over rows; the result does not depend on the thread count or the SIMD path. */
void glq_hadamard_apply(const glq_hadamard *h, float *x, int64_t rows, int transpose);
/* One diagonal block of a plan: coordinates [off, off + len) are multiplied by (S (x) H_L) / sqrt(len),
 * H_L the unnormalised Sylvester FWHT of order L = 2^k, S a p x p +-1 matrix (p = 1: none), element
 * off + b*L + a (b < p, a < L). s and st are S and Sᵀ row-major (NULL when p = 1), valid for the
 * life of the process. For other implementations of the same transform (the CUDA layers). */
typedef struct glq_hadamard_block {
  int64_t off, len, L;
  int p;
  const float *s, *st;
} glq_hadamard_block;
int glq_hadamard_nblocks(const glq_hadamard *h);
/* Block i (0 <= i < glq_hadamard_nblocks(h)); blocks are in order of offset and cover 0 .. n-1. */
void glq_hadamard_block_at(const glq_hadamard *h, int i, glq_hadamard_block *out);
/* Short human description, e.g. "FWHT 4096" or "H12 (Paley I) (x) FWHT 512". */
const char *glq_hadamard_describe(const glq_hadamard *h);
/* max |H_ij| * sqrt(n): 1 for a true Hadamard matrix, sqrt(n / smallest block) for block-diagonal plans. */
double glq_hadamard_coherence(const glq_hadamard *h);
/* Convenience: plan for n, then apply (error message names n). */
int glq_hadamard_transform(float *x, int64_t rows, int64_t n, glq_hadamard_kind kind, int transpose);

#endif
