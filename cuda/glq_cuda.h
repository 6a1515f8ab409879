/* glq_cuda.h - the C interface of glq's CUDA kernels (E8 and HiF4 matmuls, batched FWHT).
 * Plain C; no CUDA headers needed: streams are passed as void * (a cudaStream_t, NULL = default).
 * Every function returns a glq_status (0 = ok) and sets the message of src/core/error.h on failure.
 * Numerics: x is bf16, y is f32 or bf16, all products accumulate in f32; see docs/cuda-notes.md. */
#ifndef GLQ_CUDA_H
#define GLQ_CUDA_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which algorithm a matmul uses. AUTO picks by batch size (see glq_cuda_ctx_set_threshold). */
typedef enum {
  GLQ_CUDA_AUTO = 0,
  GLQ_CUDA_FUSED,      /* weights decoded in registers, tensor-core mma; best for small batch */
  GLQ_CUDA_DEQUANT     /* weights decoded once to a bf16 scratch, then cublasGemmEx */
} glq_cuda_path;

/* Describe the first CUDA device into buf ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79 GiB");
 * GLQ_EUNSUPPORTED with the reason in buf and the error message when there is none. */
int glq_cuda_describe(char *buf, size_t n);

/* Per-device state: cuBLAS handle, multiprocessor count, bf16 scratch for GLQ_CUDA_DEQUANT.
 * One context per thread/stream that runs matmuls (the scratch is not shared safely). */
typedef struct glq_cuda_ctx glq_cuda_ctx;
int glq_cuda_ctx_create(glq_cuda_ctx **ctx);
/* Make the scratch hold at least out*in bf16 values (call before graph capture; no allocation later). */
int glq_cuda_ctx_reserve(glq_cuda_ctx *ctx, int64_t out, int64_t in);
/* AUTO uses FUSED for B <= max_fused_batch, else DEQUANT (default 16). */
void glq_cuda_ctx_set_threshold(glq_cuda_ctx *ctx, int64_t max_fused_batch);
/* glq_cuda_linear's Hadamard transforms: one launch with one CTA per row for B <= max_row_batch
 * (default 64), else the multi-pass kernels that spread a row over many CTAs (0: always those). */
void glq_cuda_ctx_set_transform_threshold(glq_cuda_ctx *ctx, int64_t max_row_batch);
/* ... and on sm_90, for B <= max_cluster_batch and plans of one block (4096 = FWHT 4096, 14336 = H28 (x) 512,
 * ...), one row over a cluster of 8 CTAs instead of one CTA, with identical results (0: never). A new context
 * starts with 16 or 0 (GLQ_CUDA_CLUSTERS_DEFAULT in common.cuh; the environment's GLQ_CUDA_CLUSTERS=1 / 0 overrides). */
void glq_cuda_ctx_set_cluster_threshold(glq_cuda_ctx *ctx, int64_t max_cluster_batch);
/* E8 fused kernel: codebook words held in shared memory (0..55296; the rest is read through L1/L2);
 * -1 (default) chooses by layer size. For tuning and benchmarks. */
void glq_cuda_ctx_set_e8_smem(glq_cuda_ctx *ctx, int entries);
/* Fused kernel tile shape: 0 = 16 rows x 16 warps, 1 = 32 rows x 8 warps, 2 = 16 rows x 8 warps with
 * two CTAs per multiprocessor (HiF4), -1 (default) by format and layer size. For tuning and benchmarks. */
void glq_cuda_ctx_set_fused_cfg(glq_cuda_ctx *ctx, int cfg);
/* glq_cuda_linear on the fused path (B <= max_fused_batch): 1 (default) splits the rotated f32 input into bf16
 * hi + lo and multiplies both (the layer's output then differs from the CPU layer's by f32 rounding only, not by
 * bf16 input rounding); 0 multiplies bf16(x) alone (faster). */
void glq_cuda_ctx_set_split_inputs(glq_cuda_ctx *ctx, int on);
/* 1: an E8P layer whose input transform is one FWHT over the whole input (4096, ...) runs it, and what
 * glq_cuda_fuse folds into it, inside the fused matmul kernel at batch <= 2 (each CTA rotates its own copy) instead
 * of a launch before; the same bytes by construction. Default 0 (GLQ_CUDA_PROLOGUE=1 sets it): measured slower than the separate transform on an H200. */
void glq_cuda_ctx_set_prologue(glq_cuda_ctx *ctx, int on);
/* 1: at batch <= 2 the fused matmuls of small-table formats (E8P, HiF4) copy their input rows to shared memory before
 * the first K step instead of reading them step by step; the same bytes (linear_check). Default 0 (GLQ_CUDA_STAGE_X=1
 * sets it): measured slower on an H100 (scripts/device/go19.sh). */
void glq_cuda_ctx_set_stage_x(glq_cuda_ctx *ctx, int on);
/* (a new context starts with 0 when the environment has GLQ_CUDA_SPLIT_INPUTS=0) */
void glq_cuda_ctx_free(glq_cuda_ctx *ctx);

/* ---- E8 (layout: docs/format.md; codebook: ../shared/docs/glq-spec.md §1) ---- */
/* The 65536 x 8 codebook on the device; every coordinate must be a multiple of 0.5 in [-3, 3]. */
typedef struct glq_cuda_codebook glq_cuda_codebook;
int glq_cuda_codebook_create(const float *table_65536x8, glq_cuda_codebook **cb);
void glq_cuda_codebook_free(glq_cuda_codebook *cb);

typedef struct glq_cuda_e8 glq_cuda_e8;
/* Upload one layer: W[i, 8j:8j+8] = wscale*(C[q1[i,j]] + inv_rs*C[q2[i,j]]), indices masked & 0xFFFF.
 * bits: 2 (q2 = NULL), 3 (q2 values < 256; stored on the device as u8), 4. in % 8 == 0.
 * q1, q2 are host arrays (out x in/8, row-major int16 bit patterns). The codebook must outlive the layer. */
int glq_cuda_e8_create(const glq_cuda_codebook *cb, int bits, int64_t out, int64_t in,
                       const int16_t *q1, const int16_t *q2, float wscale, float inv_rs,
                       glq_cuda_e8 **layer);
void glq_cuda_e8_free(glq_cuda_e8 *layer);
size_t glq_cuda_e8_bytes(const glq_cuda_e8 *layer);  /* device bytes of the weights as streamed */
/* y (B x out, row-major, ldy = out; f32, or bf16 bits when y_bf16) = x (B x in, bf16 bits,
 * row-major, ldx = in) . W^T. Device pointers; x 16-byte aligned. x_lo: NULL, or a second bf16 matrix like x
 * (the remainders of an f32 input split as x + x_lo): the product is then (x + x_lo) . W^T, twice the
 * tensor-core work (on the dequantize path two GEMMs, f32 y only). */
int glq_cuda_e8_matmul(glq_cuda_ctx *ctx, const glq_cuda_e8 *layer, const uint16_t *x_bf16, const uint16_t *x_lo,
                       int64_t B, void *y, int y_bf16, glq_cuda_path path, void *stream);
/* w (out x in bf16 bits, device) = round_bf16(W / wscale): the exact E8 sum for 2 bits. */
int glq_cuda_e8_dequant(glq_cuda_ctx *ctx, const glq_cuda_e8 *layer, uint16_t *w_bf16, void *stream);

/* ---- HiF4 (docs/hif4.md; packed layout of the reference) ---- */
typedef struct glq_cuda_hif4 glq_cuda_hif4;
/* Upload one layer of out rows and in columns (n_blocks = ceil(in/64) units per row) from the
 * reference's packed host arrays: e6m2 (out x nb), e1_8 (out x nb), e1_16 (out x nb x 2),
 * s1p2 (out x nb x 32). Columns >= in must decode to zero or are ignored (x is taken as 0 there). */
int glq_cuda_hif4_create(int64_t out, int64_t in, const uint8_t *e6m2, const uint8_t *e1_8,
                         const uint8_t *e1_16, const uint8_t *s1p2, glq_cuda_hif4 **layer);
void glq_cuda_hif4_free(glq_cuda_hif4 *layer);
size_t glq_cuda_hif4_bytes(const glq_cuda_hif4 *layer);
/* as glq_cuda_e8_matmul, x_lo included */
int glq_cuda_hif4_matmul(glq_cuda_ctx *ctx, const glq_cuda_hif4 *layer, const uint16_t *x_bf16, const uint16_t *x_lo,
                         int64_t B, void *y, int y_bf16, glq_cuda_path path, void *stream);
/* w (out x in bf16 bits, device) = the exact decoded weight. */
int glq_cuda_hif4_dequant(glq_cuda_ctx *ctx, const glq_cuda_hif4 *layer, uint16_t *w_bf16, void *stream);

/* ---- Linear layers: any CPU glq_linear on the GPU, f32 activations (cuda/linear.cu) ----
 * Scratch (rotated inputs, bf16 copies of x) lives in the context and is shared by its layers:
 * reserve every layer (and set the fused threshold) before capturing a graph, since growing the
 * scratch moves it. The E8 codebook is uploaded once per process at the first E8 layer and kept
 * until exit (never freed); so are the p x p Hadamard factors of Kronecker plans. */
struct glq_linear;
typedef struct glq_cuda_linear glq_cuda_linear;
/* Upload a CPU layer built by glq_dense_linear_new / glq_e8_linear_new / glq_hif4_linear_new (vt->kind "dense", "e8", "hif4").
 * dense_bf16 != 0: dense weights are stored as bf16 and multiplied in bf16 (x rounded to bf16, cublasGemmEx, f32 accumulate);
 * 0: f32 weights, cublasSgemm with TF32 disabled (CUBLAS_DEFAULT_MATH / pedantic), so results track the CPU closely.
 * Bias (if any) is uploaded and added. Errors name the problem (unsupported kind, shape). */
int glq_cuda_linear_upload(glq_cuda_ctx *ctx, const struct glq_linear *cpu, int dense_bf16, glq_cuda_linear **out);
/* Layers with random valid contents, for end-to-end benchmarks of large shapes (no CPU weight needed):
 * kind "dense" (bf16), "e8" with bits 2/3/4 (random indices, +-1 signs, sensible scales), "hif4" (random valid packed fields),
 * "hif4-rht" (the same with random input signs, so its input goes through the Hadamard transform of glq_hadamard_plan).
 * Uses the default Hadamard plan of glq_hadamard_plan for the E8 input/output transforms (e.g. 14336 = H28 (x) FWHT512). */
int glq_cuda_linear_random(glq_cuda_ctx *ctx, const char *kind, int bits, int64_t out, int64_t in, uint64_t seed, glq_cuda_linear **out_l);
/* Make forward() for up to max_b rows allocation-free (call before CUDA graph capture). forward() grows scratch itself otherwise. */
int glq_cuda_linear_reserve(glq_cuda_ctx *ctx, glq_cuda_linear *l, int64_t max_b);
/* y (B x out, f32, device, row-major) = x (B x in, f32, device, row-major) . W^T (+ bias). x is not modified; y must not alias x.
 * No allocation and no host synchronisation once reserved (graph-capturable); deterministic (no float atomics). */
int glq_cuda_linear_forward(glq_cuda_ctx *ctx, glq_cuda_linear *l, const float *x, int64_t B, float *y, void *stream);
/* The same on scratch lane `lane` (0 .. GLQ_CUDA_LANES-1; forward() is lane 0): layers forwarded concurrently on
 * different streams must use different lanes. Batches above the fused threshold (prefill) share one dequantize
 * scratch, so only lane 0 may run those. */
enum { GLQ_CUDA_LANES = 3 };
int glq_cuda_linear_forward_lane(glq_cuda_ctx *ctx, glq_cuda_linear *l, const float *x, int64_t B, float *y,
                                 void *stream, int lane);
/* The decode step's neighbouring operations folded into a layer's Hadamard transforms (rows of in / out values):
 *   norm_w != NULL: the layer's input is RMSNorm(x row, norm_eps) ⊙ norm_w  (glq_cuda_rmsnorm_rows' values);
 *   gate != NULL (B x in, like x): the input is silu(gate) ⊙ x               (glq_cuda_swiglu's values);
 *   accumulate: y += the layer's output instead of y = it                    (glq_cuda_add's values);
 * each gives the bytes of the standalone kernel followed by the plain forward. */
typedef struct {
  const float *norm_w;
  float norm_eps;
  const float *gate;
  int accumulate;
} glq_cuda_fuse;
enum { GLQ_CUDA_FUSE_INPUT = 1, GLQ_CUDA_FUSE_ACCUMULATE = 2 };
/* Which of them forward_fused can fold for a batch of B rows on this context (GLQ_CUDA_FUSE_* bits): the input
 * ones where the quantized kinds' input transform runs as one row (or cluster) kernel, accumulate where their
 * output transform does (E8, E8P, trellis). */
int glq_cuda_linear_fusable(const glq_cuda_ctx *ctx, const glq_cuda_linear *l, int64_t B);
/* forward_lane with f folded in (NULL: none); an f the layer cannot fold for B is an error (GLQ_EUNSUPPORTED). With
 * accumulate, y may not overlap x or gate either. */
int glq_cuda_linear_forward_fused(glq_cuda_ctx *ctx, glq_cuda_linear *l, const float *x, int64_t B, float *y,
                                  void *stream, int lane, const glq_cuda_fuse *f);
/* The standalone operations (f32, device, row-major), on stream: y (rows x d) = RMSNorm(x) ⊙ w (in place
 * allowed); g (n) = silu(g) ⊙ u; h (n) += t. */
int glq_cuda_rmsnorm_rows(const float *x, const float *w, float *y, int64_t rows, int64_t d, float eps, void *stream);
int glq_cuda_swiglu(float *g, const float *u, int64_t n, void *stream);
int glq_cuda_add(float *h, const float *t, int64_t n, void *stream);
int64_t glq_cuda_linear_in(const glq_cuda_linear *l);         /* the CPU layer's in and out */
int64_t glq_cuda_linear_out(const glq_cuda_linear *l);
const char *glq_cuda_linear_kind(const glq_cuda_linear *l);   /* "dense", "dense-bf16", "e8", "hif4" */
size_t glq_cuda_linear_bytes(const glq_cuda_linear *l);        /* device bytes of the weights (+scales, signs) */
void glq_cuda_linear_free(glq_cuda_linear *l);                /* NULL is fine */

/* ---- E8 nearest-neighbour search and LDLQ sweeps on the GPU (cuda/ldlq.cu) ----
 * Results equal the CPU's (src/quant/e8.h, ldlq.h): the search is exact (lowest index on ties), the
 * per-row f32 arithmetic is the CPU's operation for operation; only the group updates (cuBLAS f32
 * GEMM, no TF32) add in another order. One object per thread: its own stream and cuBLAS handle. */
typedef struct glq_cuda_ldlq glq_cuda_ldlq;
int glq_cuda_ldlq_create(glq_cuda_ldlq **out);
void glq_cuda_ldlq_free(glq_cuda_ldlq *q);                     /* NULL is fine */
/* idx[i] = the exact nearest of the first `size` (256 or 65536) codebook entries to x[8i .. 8i+8)
 * (host arrays) - glq_e8_encode on the GPU; a non-finite x is GLQ_EINVAL naming the vector, as there */
int glq_cuda_e8_encode(glq_cuda_ldlq *q, const float *x, int64_t n, int size, int32_t *idx);
/* glq_ldlq_backend callbacks (ctx = the glq_cuda_ldlq); the factor stays on the device until replaced */
int glq_cuda_ldlq_set_factor(void *q, int64_t n, const float *l, const float *d);
struct glq_sweep_args; /* src/quant/ldlq.h */
int glq_cuda_ldlq_sweep(void *q, const struct glq_sweep_args *a);
/* *out = <dwᵀ·dw, h> (dw rows x n, h n x n, host f32 row-major): cuBLAS SSYRK, then each row's sum over the
 * upper triangle in f64 (a fixed warp order), rows added in order on the host */
int glq_cuda_ldlq_proxy_sum(void *q, const float *dw, int64_t rows, int64_t n, const float *h, double *out);
/* the trellis codec's Viterbi of n tiles (glq_trellis_viterbi_fn of src/quant/trellis.h) through glq_cuda_trellis */
struct glq_trellis_code;
int glq_cuda_ldlq_trellis_viterbi(void *q, const struct glq_trellis_code *c, const float *x, int64_t n, int T,
                                  const int32_t *overlap, int32_t *states);
/* A glq_ldlq_backend (src/quant/ldlq.h: sweeps, proxy sums, the trellis Viterbi) for one quantization, from a
 * pool of glq_cuda_ldlq objects kept for reuse (creating one per layer, and the device-wide synchronisation of
 * freeing its buffers, cost more than a small layer's sweeps); thread-safe. give returns it (ctx NULL: nothing). */
struct glq_ldlq_backend;
int glq_cuda_ldlq_backend_take(struct glq_ldlq_backend *be);
void glq_cuda_ldlq_backend_give(struct glq_ldlq_backend *be);

/* ---- Viterbi search of a bitshift trellis (QTIP) on the GPU (cuda/trellis.cu) ----
 * States are L-bit integers; a step appends K·V bits (s' = (s << KV | j) mod 2^L) and emits the V values
 * lut[s'·V .. s'·V+V). The search returns what the CPU's (src/quant/trellis.h) returns: the same f32
 * operations per state, lowest predecessor / lowest final state on ties. One object per thread. */
typedef struct glq_cuda_trellis glq_cuda_trellis;
/* lut: host 2^L x V f32 (the decoded code of every state); 2 <= L <= 16, V in {1, 2}, K·V < L, K·V <= 8 */
int glq_cuda_trellis_create(int L, int K, int V, const float *lut, glq_cuda_trellis **out);
void glq_cuda_trellis_free(glq_cuda_trellis *t);                  /* NULL is fine */
/* For each of n sequences of T values (x: host, n x T, T % V == 0) the state sequence (states: host,
 * n x T/V) of least squared error. overlap NULL: any start and end; else sequence i must start in a state
 * whose top L-KV bits are overlap[i] and end in one whose low L-KV bits are overlap[i] (tail-biting). */
int glq_cuda_trellis_viterbi(glq_cuda_trellis *t, const float *x, int64_t n, int T, const int32_t *overlap,
                             int32_t *states);

#ifdef __cplusplus
}
#endif
#endif
