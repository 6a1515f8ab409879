/* context.cu - per-device state of the CUDA backend and the dequantize-then-cuBLAS GEMM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common.cuh"

extern "C" int glq_cuda_describe(char *buf, size_t n) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    snprintf(buf, n, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return glq_error(GLQ_EUNSUPPORTED, "%s", buf);
  }
  cudaDeviceProp p;
  e = cudaGetDeviceProperties(&p, 0);
  if (e != cudaSuccess) {
    snprintf(buf, n, "CUDA device 0 unreadable (%s)", cudaGetErrorString(e));
    return glq_error(GLQ_EIO, "%s", buf);
  }
  snprintf(buf, n, "%s, sm_%d%d, %d SMs, %.0f GiB", p.name, p.major, p.minor, p.multiProcessorCount,
           (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
  return GLQ_OK;
}

extern "C" int glq_cuda_ctx_create(glq_cuda_ctx **out) {
  *out = NULL;
  glq_cuda_ctx *c = (glq_cuda_ctx *)calloc(1, sizeof *c);
  if (!c) return glq_error(GLQ_ENOMEM, "glq_cuda_ctx_create: out of host memory");
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, dev);
  int major = 0;
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  c->pdl = major >= 9 && !getenv("GLQ_CUDA_NO_PDL");
  if (e != cudaSuccess) {
    free(c);
    return glq_error(GLQ_EIO, "glq_cuda_ctx_create: %s", cudaGetErrorString(e));
  }
  c->max_fused_batch = 16; /* measured: fused wins up to 16, DEQUANT from 64 (docs/cuda-notes.md) */
  c->max_row_batch = 64;    /* up to one wave of row CTAs; prefill keeps the multi-pass transforms */
  /* a row's transform over a cluster of 8 CTAs up to 16 rows (128 CTAs); GLQ_CUDA_CLUSTERS=0/1 overrides the
   * default (off until measured on a GPU: docs/cuda-notes.md) */
  const char *cl = getenv("GLQ_CUDA_CLUSTERS");
  c->max_cluster_batch = (cl ? strcmp(cl, "0") != 0 : GLQ_CUDA_CLUSTERS_DEFAULT) ? 16 : 0;
  c->e8_smem_entries = -1;
  c->fused_cfg = -1;
  const char *sp = getenv("GLQ_CUDA_SPLIT_INPUTS"); /* "0": bf16 inputs alone (glq_cuda_ctx_set_split_inputs) */
  c->split_inputs = !(sp && !strcmp(sp, "0"));
  const char *pr = getenv("GLQ_CUDA_PROLOGUE"); /* "1": glq_cuda_ctx_set_prologue(c, 1) (off: slower, docs/cuda-notes.md) */
  c->prologue = pr && !strcmp(pr, "1");
  const char *sx = getenv("GLQ_CUDA_STAGE_X"); /* "1": glq_cuda_ctx_set_stage_x(c, 1) (off: slower on an H100) */
  c->stage_x = sx && !strcmp(sx, "1");
  c->blas_ws_bytes = (size_t)32 << 20;
  if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
    free(c);
    return glq_error(GLQ_EIO, "glq_cuda_ctx_create: cublasCreate failed");
  }
  e = cudaMalloc(&c->blas_ws, c->blas_ws_bytes);
  if (e != cudaSuccess) {
    cublasDestroy(c->blas);
    free(c);
    return glq_error(GLQ_ENOMEM, "glq_cuda_ctx_create: cuBLAS workspace: %s", cudaGetErrorString(e));
  }
  *out = c;
  return GLQ_OK;
}

extern "C" int glq_cuda_ctx_reserve(glq_cuda_ctx *c, int64_t out, int64_t in) {
  const size_t need = (size_t)out * (size_t)in;
  if (need <= c->scratch_elems) return GLQ_OK;
  GLQ_CUDA_TRY(cudaFree(c->scratch));
  c->scratch = NULL;
  c->scratch_elems = 0;
  GLQ_CUDA_TRY(cudaMalloc(&c->scratch, need * sizeof(uint16_t)));
  c->scratch_elems = need;
  return GLQ_OK;
}

extern "C" void glq_cuda_ctx_set_threshold(glq_cuda_ctx *c, int64_t max_fused_batch) {
  c->max_fused_batch = max_fused_batch;
}

extern "C" void glq_cuda_ctx_set_transform_threshold(glq_cuda_ctx *c, int64_t max_row_batch) {
  c->max_row_batch = max_row_batch;
}

extern "C" void glq_cuda_ctx_set_e8_smem(glq_cuda_ctx *c, int entries) { c->e8_smem_entries = entries; }

extern "C" void glq_cuda_ctx_set_split_inputs(glq_cuda_ctx *c, int on) { c->split_inputs = on != 0; }
extern "C" void glq_cuda_ctx_set_prologue(glq_cuda_ctx *c, int on) { c->prologue = on != 0; }
extern "C" void glq_cuda_ctx_set_stage_x(glq_cuda_ctx *c, int on) { c->stage_x = on != 0; }
extern "C" void glq_cuda_ctx_set_cluster_threshold(glq_cuda_ctx *c, int64_t n) { c->max_cluster_batch = n < 0 ? 0 : n; }

extern "C" void glq_cuda_ctx_set_fused_cfg(glq_cuda_ctx *c, int cfg) { c->fused_cfg = cfg < 0 ? -1 : cfg > 2 ? 2 : cfg; }

extern "C" void glq_cuda_ctx_free(glq_cuda_ctx *c) {
  if (!c) return;
  cudaFree(c->scratch);
  cudaFree(c->blas_ws);
  for (int i = 0; i < GLQ_CUDA_LANES; i++) {
    cudaFree(c->lin_ws[i]);
    cudaFree(c->lane_blas_ws[i]);
  }
  cublasDestroy(c->blas);
  free(c);
}

int glq_cuda_gemm_scratch(glq_cuda_ctx *c, int64_t out, int64_t in, const uint16_t *x, const uint16_t *x_lo, int64_t B,
                          void *y, int y_bf16, float alpha, cudaStream_t st) {
  if (x_lo && y_bf16) return glq_error(GLQ_EUNSUPPORTED, "matmul: split inputs with a bf16 output on the dequantize path");
  GLQ_CUBLAS_TRY(cublasSetStream(c->blas, st)); /* this resets the workspace: set ours after it */
  GLQ_CUBLAS_TRY(cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_bytes));
  /* column-major view: y^T (out x B) = W (row-major out x in, i.e. op T) . x^T (in x B); then + W . x_lo^T */
  for (int pass = 0; pass < (x_lo ? 2 : 1); ++pass) {
    const float beta = pass ? 1.f : 0.f;
    GLQ_CUBLAS_TRY(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)B, (int)in, &alpha, c->scratch,
                                CUDA_R_16BF, (int)in, pass ? x_lo : x, CUDA_R_16BF, (int)in, &beta, y,
                                y_bf16 ? CUDA_R_16BF : CUDA_R_32F, (int)out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return GLQ_OK;
}

/* Validate the common matmul arguments and pick the path. */
int glq_cuda_pick_path(glq_cuda_ctx *c, int64_t out, int64_t in, int64_t B, glq_cuda_path path,
                       glq_cuda_path *picked) {
  if (B < 1 || B > (1 << 24)) return glq_error(GLQ_EINVAL, "matmul: batch %lld out of range", (long long)B);
  if (path == GLQ_CUDA_AUTO) path = B <= c->max_fused_batch ? GLQ_CUDA_FUSED : GLQ_CUDA_DEQUANT;
  if (path == GLQ_CUDA_DEQUANT && (size_t)out * (size_t)in > c->scratch_elems)
    return glq_error(GLQ_EINVAL, "matmul: scratch holds %zu weights, %lld x %lld needed (glq_cuda_ctx_reserve)",
                     c->scratch_elems, (long long)out, (long long)in);
  *picked = path;
  return GLQ_OK;
}
