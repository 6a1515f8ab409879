/* trellis.cu - the Viterbi search of a bitshift trellis (QTIP) on the GPU (glq_cuda.h).
 *
 * One CTA per sequence. The 2^L path costs of a sequence live in global memory (two buffers, L2-resident
 * for the batches LDLQ hands us: 256 KB each at L = 16); per step every thread takes groups u of states
 * that share their predecessors {u + t·2^(L-KV)}, keeps the minimum over t (ascending, strict <, so the
 * lowest predecessor wins ties), records t, and writes the new costs err(s', x) + min for the 2^KV states
 * s' = u·2^KV + j. The arithmetic is the CPU's (src/quant/trellis.c) operation for operation: err is
 * d0·d0 (+ d1·d1 for V = 2) with d = lut - x, then + min; this file is compiled with -fmad=false so that no
 * multiply/add pair is contracted. The final minimum takes the lowest state index on ties; the traceback
 * runs in one thread from the recorded predecessor choices. */
#include "common.cuh"
#include "glq_cuda.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VT_THREADS 1024
#define VT_MAX_SEQ 256 /* sequences per launch (bounds the predecessor-choice buffer) */

struct glq_cuda_trellis {
  int L, K, V;
  float *lut;          /* 2^L x V */
  float *cost;         /* VT_MAX_SEQ x 2 x 2^L */
  uint8_t *choice;     /* VT_MAX_SEQ x steps x 2^(L-KV), allocated for the longest T seen */
  size_t choice_bytes;
  float *x;            /* VT_MAX_SEQ x T */
  int32_t *ov, *states;
  int t_cap;           /* T the x/states buffers hold */
  cudaStream_t st;
};

struct VtArgs {
  const float *lut, *x;
  float *cost;
  uint8_t *choice;
  const int32_t *ov;   /* NULL: no tail-biting constraint */
  int32_t *states;
  int L, KV, V, steps, T;
};

__device__ __forceinline__ float vt_err(const float *lut, int V, uint32_t s, const float *xs) {
  float d = lut[(size_t)s * V] - xs[0];
  float e = d * d;
  if (V == 2) {
    d = lut[(size_t)s * 2 + 1] - xs[1];
    e = e + d * d;
  }
  return e;
}

static __global__ void __launch_bounds__(VT_THREADS) viterbi_kernel(const VtArgs a) {
  const int seq = blockIdx.x;
  const uint32_t ns = 1u << a.L, ng = 1u << (a.L - a.KV), nkv = 1u << a.KV;
  float *c0 = a.cost + (size_t)seq * 2 * ns, *c1 = c0 + ns;
  const float *x = a.x + (size_t)seq * a.T;
  uint8_t *ch = a.choice + (size_t)seq * a.steps * ng;
  const int has_ov = a.ov != NULL;
  const uint32_t ov = has_ov ? (uint32_t)a.ov[seq] : 0;
  for (uint32_t s = threadIdx.x; s < ns; s += VT_THREADS) {
    float e = vt_err(a.lut, a.V, s, x);
    if (has_ov && (s >> a.KV) != ov) e = INFINITY;
    c0[s] = e;
  }
  __syncthreads();
  for (int i = 1; i < a.steps; i++) {
    const float *xs = x + (size_t)i * a.V;
    uint8_t *chi = ch + (size_t)i * ng;
    for (uint32_t u = threadIdx.x; u < ng; u += VT_THREADS) {
      float best = c0[u];
      uint32_t bt = 0;
      for (uint32_t t = 1; t < nkv; t++) {
        const float c = c0[u + (t << (a.L - a.KV))];
        if (c < best) best = c, bt = t;
      }
      chi[u] = (uint8_t)bt;
      for (uint32_t j = 0; j < nkv; j++) {
        const uint32_t s = (u << a.KV) | j;
        c1[s] = vt_err(a.lut, a.V, s, xs) + best;
      }
    }
    __syncthreads();
    float *tmp = c0;
    c0 = c1;
    c1 = tmp;
  }
  /* final minimum, lowest index on ties; end states restricted to low L-KV bits == ov */
  __shared__ float rbest[VT_THREADS];
  __shared__ uint32_t ridx[VT_THREADS];
  float best = INFINITY;
  uint32_t bi = 0xFFFFFFFFu;
  const uint32_t low = ng - 1;
  for (uint32_t s = threadIdx.x; s < ns; s += VT_THREADS) {
    if (has_ov && (s & low) != ov) continue;
    const float c = c0[s];
    if (c < best || bi == 0xFFFFFFFFu) best = c, bi = s; /* ascending s per thread: first minimum kept */
  }
  rbest[threadIdx.x] = best;
  ridx[threadIdx.x] = bi;
  __syncthreads();
  for (int w = VT_THREADS / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) {
      const float ob = rbest[threadIdx.x + w];
      const uint32_t oi = ridx[threadIdx.x + w];
      const float mb = rbest[threadIdx.x];
      const uint32_t mi = ridx[threadIdx.x];
      if (oi != 0xFFFFFFFFu && (mi == 0xFFFFFFFFu || ob < mb || (ob == mb && oi < mi)))
        rbest[threadIdx.x] = ob, ridx[threadIdx.x] = oi;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    int32_t *out = a.states + (size_t)seq * a.steps;
    uint32_t s = ridx[0];
    out[a.steps - 1] = (int32_t)s;
    for (int i = a.steps - 1; i > 0; i--) {
      const uint32_t u = s >> a.KV;
      s = u + ((uint32_t)ch[(size_t)i * ng + u] << (a.L - a.KV));
      out[i - 1] = (int32_t)s;
    }
  }
}

extern "C" int glq_cuda_trellis_create(int L, int K, int V, const float *lut, glq_cuda_trellis **out) {
  *out = NULL;
  if (L < 2 || L > 16 || K < 1 || V < 1 || V > 2 || K * V >= L || K * V > 8)
    return glq_error(GLQ_EINVAL, "cuda trellis: unsupported L=%d K=%d V=%d", L, K, V);
  glq_cuda_trellis *t = (glq_cuda_trellis *)calloc(1, sizeof *t);
  if (!t) return glq_error(GLQ_ENOMEM, "cuda trellis: out of host memory");
  t->L = L, t->K = K, t->V = V;
  const size_t ns = (size_t)1 << L;
  cudaError_t e = cudaStreamCreateWithFlags(&t->st, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMalloc((void **)&t->lut, ns * V * sizeof(float));
  if (e == cudaSuccess) e = cudaMemcpy(t->lut, lut, ns * V * sizeof(float), cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMalloc((void **)&t->cost, (size_t)VT_MAX_SEQ * 2 * ns * sizeof(float));
  if (e == cudaSuccess) e = cudaMalloc((void **)&t->ov, VT_MAX_SEQ * sizeof(int32_t));
  if (e != cudaSuccess) {
    glq_cuda_trellis_free(t);
    return glq_error(e == cudaErrorMemoryAllocation ? GLQ_ENOMEM : GLQ_EIO, "cuda trellis: %s", cudaGetErrorString(e));
  }
  *out = t;
  return GLQ_OK;
}

extern "C" void glq_cuda_trellis_free(glq_cuda_trellis *t) {
  if (!t) return;
  if (t->st) cudaStreamDestroy(t->st);
  cudaFree(t->lut);
  cudaFree(t->cost);
  cudaFree(t->choice);
  cudaFree(t->x);
  cudaFree(t->ov);
  cudaFree(t->states);
  free(t);
}

static int reserve(glq_cuda_trellis *t, int T) {
  const int steps = T / t->V;
  const size_t need = (size_t)VT_MAX_SEQ * steps * ((size_t)1 << (t->L - t->K * t->V));
  if (need > t->choice_bytes) {
    cudaFree(t->choice);
    t->choice = NULL;
    t->choice_bytes = 0;
    GLQ_CUDA_TRY(cudaMalloc((void **)&t->choice, need));
    t->choice_bytes = need;
  }
  if (T > t->t_cap) {
    cudaFree(t->x);
    cudaFree(t->states);
    t->x = NULL, t->states = NULL, t->t_cap = 0;
    GLQ_CUDA_TRY(cudaMalloc((void **)&t->x, (size_t)VT_MAX_SEQ * T * sizeof(float)));
    GLQ_CUDA_TRY(cudaMalloc((void **)&t->states, (size_t)VT_MAX_SEQ * T * sizeof(int32_t)));
    t->t_cap = T;
  }
  return GLQ_OK;
}

extern "C" int glq_cuda_trellis_viterbi(glq_cuda_trellis *t, const float *x, int64_t n, int T, const int32_t *overlap,
                                        int32_t *states) {
  if (!t || n < 0 || T < 1 || T % t->V) return glq_error(GLQ_EINVAL, "cuda trellis viterbi: bad arguments (n=%lld, T=%d)", (long long)n, T);
  int rc = reserve(t, T);
  if (rc) return rc;
  const int steps = T / t->V;
  for (int64_t i0 = 0; i0 < n; i0 += VT_MAX_SEQ) {
    const int64_t nb = n - i0 < VT_MAX_SEQ ? n - i0 : VT_MAX_SEQ;
    GLQ_CUDA_TRY(cudaMemcpyAsync(t->x, x + i0 * T, (size_t)nb * T * sizeof(float), cudaMemcpyHostToDevice, t->st));
    if (overlap)
      GLQ_CUDA_TRY(cudaMemcpyAsync(t->ov, overlap + i0, (size_t)nb * sizeof(int32_t), cudaMemcpyHostToDevice, t->st));
    VtArgs a;
    a.lut = t->lut, a.x = t->x, a.cost = t->cost, a.choice = t->choice, a.ov = overlap ? t->ov : NULL;
    a.states = t->states, a.L = t->L, a.KV = t->K * t->V, a.V = t->V, a.steps = steps, a.T = T;
    viterbi_kernel<<<(unsigned)nb, VT_THREADS, 0, t->st>>>(a);
    GLQ_CUDA_LAUNCHED();
    GLQ_CUDA_TRY(cudaMemcpyAsync(states + i0 * steps, t->states, (size_t)nb * steps * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, t->st));
  }
  GLQ_CUDA_TRY(cudaStreamSynchronize(t->st));
  return GLQ_OK;
}
