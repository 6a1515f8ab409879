/* rowops.cuh - the decode step's elementwise and row operations as device functions, so that the standalone
 * kernels (linear.cu: glq_cuda_rmsnorm_rows, glq_cuda_swiglu, glq_cuda_add) and the Hadamard row kernels that
 * fold them into a projection's input or output (hadamard_rows.cuh) compute the same bits (internal). */
#ifndef GLQ_CUDA_ROWOPS_CUH
#define GLQ_CUDA_ROWOPS_CUH
#include <math.h>

/* The RMSNorm reduction's shape: RED threads sum positions t, t + RED, ... in double, then a fixed tree. */
enum { GLQ_RMS_RED = 256 };

/* 1/sqrt(mean(x²) + eps) of the d values at x, as llama.c computes it (double sum), in the fixed order above.
 * Every thread of a block of NT >= GLQ_RMS_RED threads (a multiple of it) calls it; sh holds GLQ_RMS_RED doubles
 * and is free again when it returns. Every thread gets the scale. */
template <int NT>
__device__ __forceinline__ float glq_rms_scale(const float *x, int64_t d, float eps, double *sh) {
  static_assert(NT % GLQ_RMS_RED == 0, "block size");
  const int t = (int)threadIdx.x;
  if (t < GLQ_RMS_RED) { /* 8 loads in flight, then their squares in order */
    double ss = 0.0;
    for (int64_t i0 = t; i0 < d; i0 += 8 * GLQ_RMS_RED) {
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = i0 + u * GLQ_RMS_RED < d ? x[i0 + u * GLQ_RMS_RED] : 0.f;
#pragma unroll
      for (int u = 0; u < 8; ++u)
        if (i0 + u * GLQ_RMS_RED < d) ss += (double)v[u] * v[u];
    }
    sh[t] = ss;
  }
  __syncthreads();
  for (int s = GLQ_RMS_RED / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  const float r = (float)(1.0 / sqrt(sh[0] / (double)d + eps));
  __syncthreads();
  return r;
}

/* x · s · w, the normalised value */
__device__ __forceinline__ float glq_rms_apply(float x, float s, float w) { return __fmul_rn(__fmul_rn(x, s), w); }

/* silu(g) · u */
__device__ __forceinline__ float glq_silu_mul(float g, float u) { return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u); }

#endif
