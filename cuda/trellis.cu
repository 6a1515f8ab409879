/* trellis.cu - the Viterbi search of a bitshift trellis (QTIP) on the GPU (glq_cuda.h).
 *
 * One CTA per sequence, everything of a step in shared memory. The CPU (src/quant/trellis.c) keeps the
 * 2^L path costs of a step; here only the 2^(L-KV) group minima are kept: for the groups u of states that
 * share their predecessors p_t = u + t·2^(L-KV),
 *     best_{i+1}(u) = min_t cost_i(p_t),   cost_i(p) = err_i(p) + best_i(p >> KV)   (cost_0 = err_0),
 * with the minimum over t ascending and strict < (the lowest predecessor wins ties), and t recorded for
 * the traceback. cost_i is recomputed where it is needed, with the CPU's operations in the CPU's order
 * (err = d0·d0, + d1·d1 for V = 2, d = lut - x; then + best), so the f32 values, and therefore the chosen
 * states, are the CPU's bit for bit; this file is compiled with -fmad=false so that nothing is contracted.
 * The group minima of a step (64 KB at L = 16, K = 2) stay in shared memory: each thread computes its
 * groups' new minima into registers, then the CTA overwrites the old ones between two barriers. The 3inst
 * code is computed (glq_3inst of common.cuh, shared with lowbit.cu), other codes read their lut from global
 * memory. Where shared memory allows (K >= 2 at L = 16 on sm_90), the 2^L code values are decoded once per
 * launch into a shared fp16 table (exact: 3inst values are fp16 numbers), so a path cost reads its code
 * value instead of recomputing the LCG (11-18% faster on the H100: the barriers, the best[] reads and the
 * choice bytes are the larger part of a step).
 * The final minimum takes the lowest state index on ties; the traceback runs in one thread from the
 * recorded choices. */
#include "common.cuh"
#include "glq_cuda.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "../src/quant/trellis.h"
}

#define VT_THREADS 1024
#define VT_GMAX 32       /* groups per thread: 2^(L-KV) / VT_THREADS <= 32 (L <= 16, KV >= 1) */
#define VT_MAX_SEQ 128   /* sequences per launch (bounds the predecessor-choice buffer) */

struct glq_cuda_trellis {
  int L, K, V;
  int inst3;           /* the lut is the 3inst code: computed in the kernel */
  float *lut;          /* 2^L x V */
  uint8_t *choice;     /* VT_MAX_SEQ x steps x 2^(L-KV), allocated for the longest T seen */
  size_t choice_bytes;
  float *x;            /* VT_MAX_SEQ x T */
  int32_t *ov, *states;
  int t_cap;           /* T the x/states buffers hold */
  size_t smem_ok[2];   /* dynamic shared memory already granted to this object's kernel (computed, table) */
  int optin;           /* the device's opt-in shared memory per block */
  cudaStream_t st;
};

struct VtArgs {
  const float *lut, *x;
  uint8_t *choice;
  const int32_t *ov;   /* NULL: no tail-biting constraint */
  int32_t *states;
  int L, KV, V, steps, T;
};

/* MODE: VT_LUT reads the code from the global lut (any L, V), VT_CALC computes 3inst, VT_TABLE reads the
 * 3inst values from the shared fp16 table decoded at the start of the launch */
enum { VT_LUT = 0, VT_CALC = 1, VT_TABLE = 2 };

template <int MODE>
__device__ __forceinline__ float vt_err(const float *lut, const __half *tab, int V, uint32_t s, const float *xs) {
  float d = (MODE == VT_TABLE ? __half2float(tab[s]) : MODE == VT_CALC ? glq_3inst(s) : lut[(size_t)s * V]) - xs[0];
  float e = d * d;
  if (MODE == VT_LUT && V == 2) {
    d = lut[(size_t)s * 2 + 1] - xs[1];
    e = e + d * d;
  }
  return e;
}

template <int MODE>
static __global__ void __launch_bounds__(VT_THREADS, 1) viterbi_kernel(const VtArgs a) {
  extern __shared__ float sm[];
  float *best = sm;                              /* 2^(L-KV) group minima of the current step */
  float *xs = sm + ((size_t)1 << (a.L - a.KV));  /* the sequence */
  __half *tab = (__half *)(xs + a.T);            /* VT_TABLE: 2^L code values */
  const int seq = blockIdx.x, tid = threadIdx.x;
  const int sh = a.L - a.KV;
  const uint32_t ns = 1u << a.L, ng = 1u << sh, nkv = 1u << a.KV;
  const int G = ng > VT_THREADS ? (int)(ng / VT_THREADS) : 1;
  uint8_t *ch = a.choice + (size_t)seq * a.steps * ng;
  const int has_ov = a.ov != NULL;
  const uint32_t ov = has_ov ? (uint32_t)a.ov[seq] : 0;
  for (int i = tid; i < a.T; i += VT_THREADS) xs[i] = a.x[(size_t)seq * a.T + i];
  if (MODE == VT_TABLE)
    for (uint32_t q = tid; q < ns; q += VT_THREADS) tab[q] = __float2half_rn(glq_3inst(q)); /* exact */
  __syncthreads();
  /* cost_i(p) for the step i whose minima are in best (i >= 1), or cost_0 */
  for (int i = 1; i < a.steps; i++) {
    const float *xp = xs + (size_t)(i - 1) * a.V;
    uint8_t *chi = ch + (size_t)i * ng;
    float nb[VT_GMAX];
#pragma unroll
    for (int g = 0; g < VT_GMAX; g++) {
      const uint32_t u = (uint32_t)tid + (uint32_t)g * VT_THREADS;
      if (g < G && u < ng) {
        float b = 0.0f;
        uint32_t bt = 0;
        for (uint32_t t = 0; t < nkv; t++) {
          const uint32_t p = u + (t << sh);
          float c = vt_err<MODE>(a.lut, tab, a.V, p, xp);
          if (i == 1) {
            if (has_ov && (p >> a.KV) != ov) c = INFINITY;
          } else {
            c = c + best[p >> a.KV];
          }
          if (t == 0 || c < b) b = c, bt = t;
        }
        nb[g] = b;
        chi[u] = (uint8_t)bt;
      }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < VT_GMAX; g++) {
      const uint32_t u = (uint32_t)tid + (uint32_t)g * VT_THREADS;
      if (g < G && u < ng) best[u] = nb[g];
    }
    __syncthreads();
  }
  /* final costs, minimum with the lowest index on ties; end states restricted to low L-KV bits == ov */
  __shared__ float rbest[VT_THREADS];
  __shared__ uint32_t ridx[VT_THREADS];
  float bv = INFINITY;
  uint32_t bi = 0xFFFFFFFFu;
  const uint32_t low = ng - 1;
  const float *xl = xs + (size_t)(a.steps - 1) * a.V;
  for (uint32_t s = tid; s < ns; s += VT_THREADS) {
    if (has_ov && (s & low) != ov) continue;
    float c = vt_err<MODE>(a.lut, tab, a.V, s, xl);
    if (a.steps == 1) {
      if (has_ov && (s >> a.KV) != ov) c = INFINITY;
    } else {
      c = c + best[s >> a.KV];
    }
    if (c < bv || bi == 0xFFFFFFFFu) bv = c, bi = s; /* ascending s per thread: first minimum kept */
  }
  rbest[tid] = bv;
  ridx[tid] = bi;
  __syncthreads();
  for (int w = VT_THREADS / 2; w > 0; w >>= 1) {
    if (tid < w) {
      const float ob = rbest[tid + w];
      const uint32_t oi = ridx[tid + w];
      const float mb = rbest[tid];
      const uint32_t mi = ridx[tid];
      if (oi != 0xFFFFFFFFu && (mi == 0xFFFFFFFFu || ob < mb || (ob == mb && oi < mi)))
        rbest[tid] = ob, ridx[tid] = oi;
    }
    __syncthreads();
  }
  if (tid == 0) {
    int32_t *out = a.states + (size_t)seq * a.steps;
    uint32_t s = ridx[0];
    out[a.steps - 1] = (int32_t)s;
    for (int i = a.steps - 1; i > 0; i--) {
      const uint32_t u = s >> a.KV;
      s = u + ((uint32_t)ch[(size_t)i * ng + u] << sh);
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
  t->inst3 = L == 16 && V == 1;
  for (uint32_t s = 0; t->inst3 && s < ns; s++)
    if (lut[s] != glq_trellis_3inst(s)) t->inst3 = 0;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&t->optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&t->st, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMalloc((void **)&t->lut, ns * V * sizeof(float));
  if (e == cudaSuccess) e = cudaMemcpy(t->lut, lut, ns * V * sizeof(float), cudaMemcpyHostToDevice);
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
  const size_t base = (((size_t)1 << (t->L - t->K * t->V)) + (size_t)T) * sizeof(float);
  const size_t fixed = 2 * VT_THREADS * sizeof(float); /* the static final-reduction arrays */
  const size_t with_tab = base + ((size_t)1 << t->L) * sizeof(__half);
  const int table = t->inst3 && with_tab + fixed <= (size_t)t->optin;
  const size_t smem = table ? with_tab : base;
  void (*kern)(const VtArgs) = table ? viterbi_kernel<VT_TABLE> : t->inst3 ? viterbi_kernel<VT_CALC> : viterbi_kernel<VT_LUT>;
  if (smem > t->smem_ok[table]) { /* once per object and size, not per LDLQ block */
    if (smem + fixed > (size_t)t->optin)
      return glq_error(GLQ_EUNSUPPORTED, "cuda trellis viterbi: %zu bytes of shared memory needed, the device has %d per "
                       "block (L=%d, K·V=%d, T=%d)", smem, t->optin, t->L, t->K * t->V, T);
    GLQ_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    t->smem_ok[table] = smem;
  }
  int rc = reserve(t, T);
  if (rc) return rc;
  const int steps = T / t->V;
  for (int64_t i0 = 0; i0 < n; i0 += VT_MAX_SEQ) {
    const int64_t nb = n - i0 < VT_MAX_SEQ ? n - i0 : VT_MAX_SEQ;
    GLQ_CUDA_TRY(cudaMemcpyAsync(t->x, x + i0 * T, (size_t)nb * T * sizeof(float), cudaMemcpyHostToDevice, t->st));
    if (overlap)
      GLQ_CUDA_TRY(cudaMemcpyAsync(t->ov, overlap + i0, (size_t)nb * sizeof(int32_t), cudaMemcpyHostToDevice, t->st));
    VtArgs a;
    a.lut = t->lut, a.x = t->x, a.choice = t->choice, a.ov = overlap ? t->ov : NULL;
    a.states = t->states, a.L = t->L, a.KV = t->K * t->V, a.V = t->V, a.steps = steps, a.T = T;
    kern<<<(unsigned)nb, VT_THREADS, smem, t->st>>>(a);
    GLQ_CUDA_LAUNCHED();
    GLQ_CUDA_TRY(cudaMemcpyAsync(states + i0 * steps, t->states, (size_t)nb * steps * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, t->st));
  }
  GLQ_CUDA_TRY(cudaStreamSynchronize(t->st));
  return GLQ_OK;
}
