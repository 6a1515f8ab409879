/* fwht.h - a standalone batched GPU fast Walsh-Hadamard transform (bench/cuda/fwht.cu), measured and
 * checked by kernel_bench only: the library's transforms run in cuda/linear.cu's line_kernel, which also
 * handles Kronecker blocks, padding and scales; this one needs whole contiguous rows of n >= 32. */
#ifndef GLQ_BENCH_FWHT_H
#define GLQ_BENCH_FWHT_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* For each of rows rows of n (power of two, 32..32768) f32 values, contiguous:
 * out_row = post .* (scale * H_n (pre .* in_row)), H_n the unnormalised Sylvester matrix.
 * pre/post: device f32 vectors of length n or NULL (= ones). out may equal in.
 * out_bf16 != 0 writes bf16 bits (uint16) instead of f32 (e.g. the input of a matmul). */
int glq_cuda_fwht(const float *in, void *out, int out_bf16, int64_t rows, int64_t n,
                  const float *pre, const float *post, float scale, void *stream);

#ifdef __cplusplus
}
#endif
#endif
