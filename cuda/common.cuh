/* common.cuh - helpers shared by glq's CUDA sources (internal; not part of the C interface). */
#ifndef GLQ_CUDA_COMMON_CUH
#define GLQ_CUDA_COMMON_CUH
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include <stdint.h>
#include "glq_cuda.h"
extern "C" {
#include "../src/core/error.h"
}

/* Device failures are reported as GLQ_EIO (the device did not do what was asked). */
#define GLQ_CUDA_TRY(expr)                                                               \
  do {                                                                                   \
    cudaError_t e_ = (expr);                                                             \
    if (e_ != cudaSuccess)                                                               \
      return glq_error(e_ == cudaErrorMemoryAllocation ? GLQ_ENOMEM : GLQ_EIO,           \
                       "%s:%d: %s: %s", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
  } while (0)

#define GLQ_CUBLAS_TRY(expr)                                                             \
  do {                                                                                   \
    cublasStatus_t s_ = (expr);                                                          \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                     \
      return glq_error(GLQ_EIO, "%s:%d: %s: cuBLAS status %d", __FILE__, __LINE__, #expr, (int)s_); \
  } while (0)

/* After a launch: report configuration errors at once (execution errors surface at the next sync). */
#define GLQ_CUDA_LAUNCHED() GLQ_CUDA_TRY(cudaGetLastError())

/* The 3inst trellis code's value of a 16-bit state, glq_trellis_3inst (src/quant/trellis.c) bit for bit: the
 * fp16 sum, rounded to nearest even, of the two fp16 halves of an LCG output (used by the Viterbi of trellis.cu
 * and the decode of lowbit.cu). */
__device__ __forceinline__ float glq_3inst(uint32_t s) {
  const uint32_t r = ((s * 89226354u + 64248484u) & 0x8FFF8FFFu) ^ 0x3B603B60u;
  return __half2float(__hadd(__ushort_as_half((unsigned short)(r & 0xFFFFu)), __ushort_as_half((unsigned short)(r >> 16))));
}

struct glq_cuda_ctx {
  cublasHandle_t blas;
  int sms;
  int pdl;                   /* programmatic dependent launch (sm_90+): see glq_launch_pdl */
  int64_t max_fused_batch;
  int64_t max_row_batch;     /* glq_cuda_linear: one-CTA-per-row Hadamard transforms up to this batch */
  int64_t max_cluster_batch; /* ... and a row over a cluster of CTAs up to this one (sm_90, one-block plans) */
  int e8_smem_entries;       /* codebook words in shared memory; -1 = by layer size */
  int fused_cfg;             /* fused tile shape (fused_mma.cuh); -1 = by batch */
  int split_inputs;          /* glq_cuda_linear: split the matmul input into bf16 hi + lo on the fused path */
  int prologue;              /* glq_cuda_linear: E8P input transforms in the matmul's prologue (glq_cuda_ctx_set_prologue) */
  int stage_x;               /* fused kernels at batch <= 2 copy x to shared memory first (fused_mma.cuh; glq_cuda_ctx_set_stage_x) */
  uint16_t *scratch;        /* bf16 weights for GLQ_CUDA_DEQUANT */
  size_t scratch_elems;
  void *blas_ws;            /* cuBLAS workspace, so that graph capture never allocates */
  size_t blas_ws_bytes;
  /* glq_cuda_linear scratch (linear.cu), one per lane: layers forwarded at the same time on different
   * streams use different lanes; lanes 1.. also get their own cuBLAS workspace (lane 0: blas_ws) */
  void *lin_ws[GLQ_CUDA_LANES];
  size_t lin_ws_bytes[GLQ_CUDA_LANES];
  void *lane_blas_ws[GLQ_CUDA_LANES];
};

/* An E8-style layer's index planes on the device (e8_kernels.cu creates them; the E8 shell kernels there
 * and the E8P kernels of lowbit.cu read them; cb is NULL for E8P). */
struct glq_cuda_e8 {
  const glq_cuda_codebook *cb;
  int bits;
  int64_t out, in, rows_pad, groups_pad; /* groups_pad: in/8 rounded up to 32 (one K step) */
  uint8_t *q1, *q2;                      /* u16 (rows_pad x groups_pad); u8 (3 bits) or u16 (4 bits) */
  int64_t pitch1, pitch2;                /* bytes per row */
  float wscale, inv_rs;
};

/* Whether a new context runs decode-sized Hadamard transforms over CTA clusters (glq_cuda_ctx_set_cluster_threshold). */
#define GLQ_CUDA_CLUSTERS_DEFAULT 1

/* Row tiles of the fused kernels are 32 rows; K steps are 256 inputs (see fused_mma.cuh). */
enum { GLQ_ROWS_PAD = 32, GLQ_STEP_K = 256 };

static inline int64_t glq_round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

/* y (B x out, f32 or bf16) = alpha * x (B x in, bf16) . W^T with W (out x in, bf16) in ctx->scratch; with x_lo
 * (f32 y only) alpha * (x + x_lo) . W^T, two GEMMs. */
int glq_cuda_gemm_scratch(glq_cuda_ctx *ctx, int64_t out, int64_t in, const uint16_t *x, const uint16_t *x_lo, int64_t B,
                          void *y, int y_bf16, float alpha, cudaStream_t st);

int glq_cuda_pick_path(glq_cuda_ctx *ctx, int64_t out, int64_t in, int64_t B, glq_cuda_path path,
                       glq_cuda_path *picked);

/* Launch kern<<<grid, block, smem, st>>>(arg) allowing it to start before the previous kernel on
 * the stream has finished (programmatic dependent launch, sm_90+; a plain launch elsewhere). Such a
 * kernel must call glq_grid_wait() before it reads what earlier kernels wrote or writes anything
 * they read; it may call glq_grid_release() so that the next such kernel can start early too. */
template <class Arg>
static int glq_launch_pdl(const glq_cuda_ctx *ctx, void (*kern)(const Arg), dim3 grid, dim3 block, size_t smem,
                          cudaStream_t st, const Arg &arg) {
  if (!ctx->pdl) {
    kern<<<grid, block, smem, st>>>(arg);
    return cudaGetLastError() == cudaSuccess ? GLQ_OK : glq_error(GLQ_EIO, "kernel launch: %s", cudaGetErrorString(cudaGetLastError()));
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  GLQ_CUDA_TRY(cudaLaunchKernelEx(&cfg, kern, arg));
  return GLQ_OK;
}

__device__ __forceinline__ void glq_grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void glq_grid_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* ---- device helpers ---- */
/* Issue the copies of `chunks` 16-byte chunks from global src to shared dst (both 16-byte aligned) with cp.async,
 * chunk c by thread c mod nthreads of the block, and commit them as one group; the caller waits
 * (cp.async.wait_all, then a barrier) before reading dst. */
__device__ __forceinline__ void glq_cp_async16(void *dst, const void *src, int chunks, int nthreads) {
  const uint32_t s = (uint32_t)__cvta_generic_to_shared(dst);
  const char *g = static_cast<const char *>(src);
  for (int c = threadIdx.x; c < chunks; c += nthreads)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s + 16u * c), "l"(g + 16 * (int64_t)c));
  asm volatile("cp.async.commit_group;");
}
__device__ __forceinline__ uint4 ldg_stream16(const void *p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ uint2 ldg_stream8(const void *p) {
  uint2 r;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
  return r;
}
__device__ __forceinline__ uint32_t ldg_stream4(const void *p) {
  uint32_t r;
  asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(r) : "l"(p));
  return r;
}
/* d = a * b + c on bf16 pairs, rounded to nearest (exact for every use in this code). */
__device__ __forceinline__ uint32_t bf16x2_fma(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
/* acc (16x8 f32) += A (16x16 bf16, row) . B (16x8 bf16, col); fragment layouts as in the PTX ISA. */
__device__ __forceinline__ void mma_bf16_16816(float acc[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                               uint32_t a3, uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float bf16lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16hi(uint32_t v) { return __uint_as_float(v & 0xFFFF0000u); }
/* Round two floats to a bf16 pair (lo in bits 0..15), nearest-even. */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}

#endif
