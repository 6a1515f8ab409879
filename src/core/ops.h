/* ops.h - small whole-tensor operations used by bindings, tests and recipes (not hot paths). */
#ifndef GLQ_OPS_H
#define GLQ_OPS_H
#include "tensor.h"

/* out = a (op) b elementwise for equal shapes, computed in double, result dtype f32 unless both f64 */
typedef enum { GLQ_OP_ADD, GLQ_OP_SUB, GLQ_OP_MUL, GLQ_OP_DIV } glq_binop;
int glq_binary(const glq_tensor *a, const glq_tensor *b, glq_binop op, glq_tensor *out);
int glq_scale(const glq_tensor *a, double s, glq_tensor *out);          /* a * s, same float dtype (f32 for ints) */
/* reductions in double over all elements */
double glq_sum(const glq_tensor *t);
double glq_sumsq(const glq_tensor *t);
double glq_absmax(const glq_tensor *t);
int glq_max_abs_diff(const glq_tensor *a, const glq_tensor *b, double *out);
/* C = A·B (or A·Bᵀ): 2-D f32 or f64 (both the same), via BLAS */
int glq_matmul(const glq_tensor *a, const glq_tensor *b, int transpose_b, glq_tensor *out);
/* deterministic random fill: SplitMix64 stream from seed; normal via Box-Muller in double */
int glq_randn(glq_dtype dt, int ndim, const int64_t *shape, uint64_t seed, glq_tensor *out);
int glq_rand(glq_dtype dt, int ndim, const int64_t *shape, uint64_t seed, glq_tensor *out); /* uniform [0,1) */
uint64_t glq_splitmix64(uint64_t *state);

#endif
