/* fwht.cu - batched fast Walsh-Hadamard transform along the last dimension (powers of two); only
 * kernel_bench uses it (declared in fwht.h, not part of libglq).
 * One CTA per row. A thread first holds E consecutive values (index = E*thread + j): the butterflies
 * of stride < E run in registers, those of stride E..16E between lanes by shuffles; for rows wider
 * than one warp (W warps) one pass through shared memory regroups the values so that each thread
 * holds the W values that differ only in the warp bits, and the last log2(W) stages run in registers. */
#include "../../cuda/common.cuh"
#include "fwht.h"

template <int E, int W>
static __global__ void __launch_bounds__(32 * W) fwht_kernel(const float *__restrict__ in, void *out, int out_bf16,
                                                             const float *__restrict__ pre, const float *__restrict__ post,
                                                             float scale) {
  constexpr int N = E * 32 * W;
  extern __shared__ float sm[];
  const int lane = threadIdx.x & 31, tau = threadIdx.x;
  const int64_t row = blockIdx.x;
  const float *src = in + row * N;
  float v[E];
#pragma unroll
  for (int j = 0; j < E; j += (E >= 4 ? 4 : 1)) {
    if (E >= 4) {
      const float4 q = *reinterpret_cast<const float4 *>(src + tau * E + j);
      v[j] = q.x; v[(j + 1) % E] = q.y; v[(j + 2) % E] = q.z; v[(j + 3) % E] = q.w;
    } else {
      v[j] = src[tau * E + j];
    }
  }
  if (pre)
#pragma unroll
    for (int j = 0; j < E; ++j) v[j] *= pre[tau * E + j];
#pragma unroll
  for (int h = 1; h < E; h <<= 1)
#pragma unroll
    for (int j = 0; j < E; ++j)
      if (!(j & h)) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
#pragma unroll
  for (int m = 1; m < 32; m <<= 1)
#pragma unroll
    for (int j = 0; j < E; ++j) {
      const float b = __shfl_xor_sync(0xffffffffu, v[j], m);
      v[j] = (lane & m) ? b - v[j] : v[j] + b;
    }
  if (W == 1) {
#pragma unroll
    for (int j = 0; j < E; ++j) {
      const int i = tau * E + j;
      const float r = v[j] * scale * (post ? post[i] : 1.f);
      if (out_bf16) reinterpret_cast<__nv_bfloat16 *>(out)[row * N + i] = __float2bfloat16_rn(r);
      else reinterpret_cast<float *>(out)[row * N + i] = r;
    }
    return;
  }
  constexpr int Q = E / W > 0 ? E / W : 1; /* values per warp position held by a thread */
#pragma unroll
  for (int j = 0; j < E; ++j) sm[tau * E + j] = v[j];
  __syncthreads();
  float u[W][Q];
#pragma unroll
  for (int wv = 0; wv < W; ++wv)
#pragma unroll
    for (int q = 0; q < Q; ++q) u[wv][q] = sm[wv * 32 * E + tau * Q + q];
#pragma unroll
  for (int h = 1; h < W; h <<= 1)
#pragma unroll
    for (int wv = 0; wv < W; ++wv)
      if (!(wv & h))
#pragma unroll
        for (int q = 0; q < Q; ++q) {
          const float a = u[wv][q], b = u[wv + h][q];
          u[wv][q] = a + b;
          u[wv + h][q] = a - b;
        }
#pragma unroll
  for (int wv = 0; wv < W; ++wv)
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int i = wv * 32 * E + tau * Q + q;
      const float r = u[wv][q] * scale * (post ? post[i] : 1.f);
      if (out_bf16) reinterpret_cast<__nv_bfloat16 *>(out)[row * N + i] = __float2bfloat16_rn(r);
      else reinterpret_cast<float *>(out)[row * N + i] = r;
    }
}

template <int E, int W>
static int fwht_launch(const float *in, void *out, int out_bf16, int64_t rows, const float *pre,
                       const float *post, float scale, cudaStream_t st) {
  static_assert(W == 1 || E % W == 0, "E must be a multiple of W");
  const size_t smem = W > 1 ? sizeof(float) * E * 32 * W : 0;
  GLQ_CUDA_TRY(cudaFuncSetAttribute(fwht_kernel<E, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  fwht_kernel<E, W><<<(unsigned)rows, 32 * W, smem, st>>>(in, out, out_bf16, pre, post, scale);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

extern "C" int glq_cuda_fwht(const float *in, void *out, int out_bf16, int64_t rows, int64_t n,
                             const float *pre, const float *post, float scale, void *stream) {
  cudaStream_t st = (cudaStream_t)stream;
  if (rows < 1 || rows > 0x7fffffff) return glq_error(GLQ_EINVAL, "glq_cuda_fwht: rows %lld", (long long)rows);
  if (out_bf16 && (const void *)in == out) return glq_error(GLQ_EINVAL, "glq_cuda_fwht: bf16 output cannot be in place");
  switch (n) {
    case 32: return fwht_launch<1, 1>(in, out, out_bf16, rows, pre, post, scale, st);
    case 64: return fwht_launch<2, 1>(in, out, out_bf16, rows, pre, post, scale, st);
    case 128: return fwht_launch<4, 1>(in, out, out_bf16, rows, pre, post, scale, st);
    case 256: return fwht_launch<8, 1>(in, out, out_bf16, rows, pre, post, scale, st);
    case 512: return fwht_launch<16, 1>(in, out, out_bf16, rows, pre, post, scale, st);
    case 1024: return fwht_launch<16, 2>(in, out, out_bf16, rows, pre, post, scale, st);
    case 2048: return fwht_launch<16, 4>(in, out, out_bf16, rows, pre, post, scale, st);
    case 4096: return fwht_launch<16, 8>(in, out, out_bf16, rows, pre, post, scale, st);
    case 8192: return fwht_launch<16, 16>(in, out, out_bf16, rows, pre, post, scale, st);
    case 16384: return fwht_launch<32, 16>(in, out, out_bf16, rows, pre, post, scale, st);
    case 32768: return fwht_launch<32, 32>(in, out, out_bf16, rows, pre, post, scale, st);
    default: return glq_error(GLQ_EUNSUPPORTED, "glq_cuda_fwht: n = %lld is not a power of two in [32, 32768]", (long long)n);
  }
}
