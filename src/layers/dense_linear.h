/* dense_linear.h - glq_linear over a plain f32 or bf16 weight (out × in), and the x·Wᵀ kernel
 * behind it. Every output element is one fixed-order dot product (8-lane FMA chains, a fixed
 * horizontal sum, then the tail), so results are identical for any batch size, tile position
 * or thread count: one x row takes 8-row register tiles (short rows), batches 3 × 4 tiles, and
 * each of them computes an element this way. */
#ifndef GLQ_DENSE_LINEAR_H
#define GLQ_DENSE_LINEAR_H
#include "linear.h"
#include "../core/tensor.h"

/* New dense layer over w (2-D out×in). A contiguous f32/bf16 w is borrowed: the layer holds a
 * reference to its storage (an mmap'd file stays mapped). Other float dtypes or strided views
 * are converted to an owned f32 copy. bias: NULL or a float tensor of `out` elements (copied). */
int glq_dense_linear_new(const glq_tensor *w, const glq_tensor *bias, glq_linear **out);

/* The weight of an existing dense layer (vt->kind "dense"): contiguous out×in f32 or bf16, borrowed
 * (valid while the layer lives); the bias is l->bias. GLQ_EINVAL for another kind. */
int glq_dense_linear_weight_of(const glq_linear *l, const void **w, glq_dtype *dtype);

/* Single-threaded y[i*ldy + j] = x[i*ldx + :]·w[j*ldw + :] (+ bias[j]) for i < B, j < out,
 * dot length n; w is f32 or bf16 (wdt). The building block of dense forward and attention. */
void glq_gemm_nt(const float *x, int64_t ldx, int64_t B, const void *w, glq_dtype wdt,
                 int64_t ldw, int64_t out, int64_t n, const float *bias, float *y, int64_t ldy);

/* Rows [j0, j1) of y = x·Wᵀ for one x row, W held as ggml Q8_0 blocks (each 32 weights: an f16
 * scale d, then 32 int8 q; n a multiple of 32, rows of n/32 blocks). Each weight is formed as
 * (float)q·d, which is exact, and goes through the same 8-lane FMA chains and reduction as an f32
 * weight in glq_gemm_nt, so y has the bits the f32 dequantized weight (ggml's q·d) gives there. */
void glq_gemv_q8_0(const float *x, const uint8_t *blocks, int64_t j0, int64_t j1, int64_t n, float *y);

#endif
