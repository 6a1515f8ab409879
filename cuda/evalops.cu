/* evalops.cu - per-row log-softmax statistics on the GPU (model_cuda.h): negative log-likelihoods
 * and KL divergences of device logits, so evaluation never copies logits to the host. One block per
 * row; every sum is a per-thread double partial followed by a fixed tree, so results repeat. */
#include <math.h>
#include <stdlib.h>
#include "common.cuh"
#include "model_cuda.h"

#define EV_THREADS 256

/* row maximum (NaN ignored) and its lowest index, left in shf[0] / shi[0]; *nan: whether a NaN was seen */
__device__ void row_max(const float *x, int64_t v, float *shf, int64_t *shi, int *nan) {
  float mx = -INFINITY;
  int64_t am = v, j0 = 0;
  int bad = 0;
  /* a thread visits its indices in increasing order, so its first hit of its maximum is its lowest index */
  auto see = [&](float xv, int64_t j) {
    if (xv > mx) { mx = xv; am = j; }
    bad |= xv != xv;
  };
  if (((uintptr_t)x & 15) == 0) { /* float4 q holds indices 4q .. 4q+3; 8 of them in flight per thread */
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    const int64_t nq = v / 4;
    for (int64_t q0 = threadIdx.x; q0 < nq; q0 += 8 * EV_THREADS) {
      float4 b[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) b[u] = q0 + u * EV_THREADS < nq ? x4[q0 + u * EV_THREADS] : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int64_t q = q0 + u * EV_THREADS;
        if (q < nq) {
          see(b[u].x, 4 * q);
          see(b[u].y, 4 * q + 1);
          see(b[u].z, 4 * q + 2);
          see(b[u].w, 4 * q + 3);
        }
      }
    }
    j0 = 4 * nq;
  }
  for (int64_t j = j0 + threadIdx.x; j < v; j += EV_THREADS) see(x[j], j);
  shf[threadIdx.x] = mx;
  shi[threadIdx.x] = am;
  *nan = __syncthreads_or(bad);
  for (int s = EV_THREADS / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) {
      float o = shf[threadIdx.x + s];
      int64_t oi = shi[threadIdx.x + s];
      if (o > shf[threadIdx.x] || (o == shf[threadIdx.x] && oi < shi[threadIdx.x])) {
        shf[threadIdx.x] = o;
        shi[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
}

/* row maximum and its lowest index, then the double log-sum-exp */
__device__ void row_lse(const float *x, int64_t v, double *lse, int64_t *arg, double *shd, float *shf, int64_t *shi) {
  int nan;
  row_max(x, v, shf, shi, &nan);
  const float mx = shf[0];
  *arg = shi[0];
  __syncthreads();
  double s = 0.0;
  for (int64_t j = threadIdx.x; j < v; j += EV_THREADS) s += exp((double)x[j] - mx);
  shd[threadIdx.x] = s;
  __syncthreads();
  for (int k = EV_THREADS / 2; k > 0; k >>= 1) {
    if ((int)threadIdx.x < k) shd[threadIdx.x] += shd[threadIdx.x + k];
    __syncthreads();
  }
  *lse = mx + log(shd[0]);
  __syncthreads();
}

static __global__ void k_nll(const float *lg, int64_t v, const int32_t *t, double *out) {
  __shared__ double shd[EV_THREADS];
  __shared__ float shf[EV_THREADS];
  __shared__ int64_t shi[EV_THREADS];
  const float *x = lg + blockIdx.x * v;
  double lse;
  int64_t am;
  row_lse(x, v, &lse, &am, shd, shf, shi);
  if (threadIdx.x == 0) out[blockIdx.x] = lse - x[t[blockIdx.x]];
}

static __global__ void k_kl(const float *P, const float *Q, int64_t v, double *kl, uint8_t *agree) {
  __shared__ double shd[EV_THREADS];
  __shared__ float shf[EV_THREADS];
  __shared__ int64_t shi[EV_THREADS];
  const float *p = P + blockIdx.x * v, *q = Q + blockIdx.x * v;
  double lp, lq;
  int64_t ap, aq;
  row_lse(p, v, &lp, &ap, shd, shf, shi);
  row_lse(q, v, &lq, &aq, shd, shf, shi);
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < v; k += EV_THREADS) {
    double lpk = p[k] - lp;
    s += exp(lpk) * (lpk - (q[k] - lq));
  }
  shd[threadIdx.x] = s;
  __syncthreads();
  for (int k = EV_THREADS / 2; k > 0; k >>= 1) {
    if ((int)threadIdx.x < k) shd[threadIdx.x] += shd[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    kl[blockIdx.x] = shd[0] > 0 ? shd[0] : 0; /* rounding can make a tiny negative */
    agree[blockIdx.x] = ap == aq;
  }
}

/* out[row] = the lowest index of the row's maximum, or -1 when the row has a NaN */
static __global__ void __launch_bounds__(EV_THREADS, 1) k_argmax(const float *lg, int64_t v, int32_t *out) {
  __shared__ float shf[EV_THREADS];
  __shared__ int64_t shi[EV_THREADS];
  int nan;
  row_max(lg + blockIdx.x * v, v, shf, shi, &nan);
  if (threadIdx.x == 0) out[blockIdx.x] = nan ? -1 : (int32_t)shi[0];
}

extern "C" int glq_cuda_argmax_rows(const float *logits, int64_t n, int64_t vocab, int32_t *out, void *stream) {
  if (vocab <= 0 || vocab > INT32_MAX || n < 0 || n > INT32_MAX)
    return glq_error(GLQ_EINVAL, "argmax: %lld rows of %lld logits", (long long)n, (long long)vocab);
  if (n == 0) return GLQ_OK;
  k_argmax<<<(unsigned)n, EV_THREADS, 0, (cudaStream_t)stream>>>(logits, vocab, out);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

extern "C" int glq_cuda_nll_rows(const float *logits, int64_t n, int64_t vocab, const int32_t *targets, double *nll) {
  if (vocab <= 0 || n < 0) return glq_error(GLQ_EINVAL, "nll: vocabulary size must be positive");
  for (int64_t i = 0; i < n; i++)
    if (targets[i] < 0 || targets[i] >= vocab)
      return glq_error(GLQ_EINVAL, "nll: target %d at row %lld outside the vocabulary of %lld", targets[i], (long long)i,
                       (long long)vocab);
  if (n == 0) return GLQ_OK;
  int32_t *t = NULL;
  double *o = NULL;
  int rc = GLQ_OK;
  cudaError_t e = cudaMalloc((void **)&t, (size_t)n * sizeof *t);
  if (e == cudaSuccess) e = cudaMalloc((void **)&o, (size_t)n * sizeof *o);
  if (e == cudaSuccess) e = cudaMemcpy(t, targets, (size_t)n * sizeof *t, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) {
    k_nll<<<(unsigned)n, EV_THREADS>>>(logits, vocab, t, o);
    e = cudaGetLastError();
  }
  if (e == cudaSuccess) e = cudaMemcpy(nll, o, (size_t)n * sizeof *o, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) rc = glq_error(GLQ_EIO, "nll on the GPU: %s", cudaGetErrorString(e));
  cudaFree(t);
  cudaFree(o);
  return rc;
}

extern "C" int glq_cuda_kl_rows(const float *p, const float *q, int64_t n, int64_t vocab, double *kl, uint8_t *agree) {
  if (vocab <= 0 || n < 0) return glq_error(GLQ_EINVAL, "kl: vocabulary size must be positive");
  if (n == 0) return GLQ_OK;
  double *k = NULL;
  uint8_t *a = NULL;
  int rc = GLQ_OK;
  cudaError_t e = cudaMalloc((void **)&k, (size_t)n * sizeof *k);
  if (e == cudaSuccess) e = cudaMalloc((void **)&a, (size_t)n);
  if (e == cudaSuccess) {
    k_kl<<<(unsigned)n, EV_THREADS>>>(p, q, vocab, k, a);
    e = cudaGetLastError();
  }
  if (e == cudaSuccess) e = cudaMemcpy(kl, k, (size_t)n * sizeof *k, cudaMemcpyDeviceToHost);
  if (e == cudaSuccess) e = cudaMemcpy(agree, a, (size_t)n, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) rc = glq_error(GLQ_EIO, "KL on the GPU: %s", cudaGetErrorString(e));
  cudaFree(k);
  cudaFree(a);
  return rc;
}
