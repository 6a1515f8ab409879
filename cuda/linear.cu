/* linear.cu - glq_cuda_linear: a CPU glq_linear (dense, E8-RHT, E8P, trellis, HiF4) on the GPU, f32 activations.
 *
 * forward, by kind (x, y f32 row-major on the device; xb the bf16 matmul input in the context's scratch):
 *   dense       y = x·Wᵀ by cublasGemmEx in f32 with CUBLAS_COMPUTE_32F_PEDANTIC (no TF32), + bias
 *   dense-bf16  xb = bf16(x); y = xb·Wᵀ by cublasGemmEx (bf16 operands, f32 accumulate), + bias
 *   e8          xb = bf16(Hn(SV ⊙ pad(x))); yt = glq_cuda_e8_matmul(xb); y = crop(SU ⊙ Hmᵀ yt) + bias
 *   e8p         the same with glq_cuda_e8p_matmul (lowbit.cu)
 *   trellis     the same with glq_cuda_tr_layer_matmul (lowbit.cu; 3inst codes at 2-4 bits; a hyb code, or
 *               another K, is dequantized once on the CPU and runs as dense f32)
 *   hif4        xb = bf16(Hn(signs ⊙ pad(x))) or bf16(pad(x)); y = glq_cuda_hif4_matmul(xb) + bias
 * On the fused path (B <= max_fused_batch) the quantized kinds split the rotated input: xb = bf16(v) and
 * xlo = bf16(v - xb), and the matmul multiplies both (glq_cuda_ctx_set_split_inputs; 0 = bf16(v) alone).
 *
 * Hadamard transforms replay the CPU plan (hadamard.h) block by block, so every plan the CPU builds
 * gives the same orthogonal map: Sylvester FWHT, H_p (x) FWHT, the block-diagonal fallbacks, glq's
 * binary blocks (GLQ_HADAMARD_GLQ_BLOCKDIAG), at any stored padded size (glq 0.2.7's powers of two).
 * Two implementations, picked per call by the batch (glq_cuda_ctx_set_transform_threshold):
 *  - small batches: one launch per transform, a row per CTA (hadamard_rows.cuh), for the plans whose
 *    row fits in shared memory and whose Kronecker factors have an order in HR_ORDERS. So an E8 layer
 *    is three launches: input transform (writes the bf16 matmul input), matmul, output transform
 *    (SU, crop and bias included).
 *  - otherwise the multi-pass path below, which spreads a row over many CTAs:
 *  - The p x p factor S of a Kronecker block is one strided-batched f32 GEMM over the rows (TF32 off;
 *    S is exactly +-1). S (x) H_L = (S (x) I)(I (x) H_L), so it runs before the FWHT.
 *  - The FWHT runs on the block's chunks of L values in shared memory, LT = 4096 values per CTA
 *    (line_kernel): chunks of any length 1 .. LT^2 work, longer than LT in two passes (low index
 *    bits, then high). The same kernel applies signs, zero padding, 1/sqrt(len), SU, bias, cropping
 *    and the bf16 rounding as it loads and stores, and with L = 1 it is the elementwise op.
 *  (bench/cuda/fwht.cu, the standalone FWHT that kernel_bench measures, cannot serve: it needs whole
 *  contiguous rows of n >= 32 and row-long sign vectors.)
 * Nothing here uses atomics; cuBLAS GEMMs are deterministic for a fixed stream and workspace. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "common.cuh"
extern "C" {
#include "../src/core/ops.h"
#include "../src/core/tensor.h"
#include "../src/layers/dense_linear.h"
#include "../src/layers/linear.h"
#include "../src/quant/e8.h"
#include "../src/layers/e8_linear.h"
#include "../src/quant/hadamard.h"
#include "../src/layers/hif4_linear.h"
#include "../src/layers/trellis_linear.h"
#include "../src/quant/e8p.h"
#include "../src/quant/rht.h"
}
#include "hadamard_rows.cuh"
#include "lowbit.cuh"
#include "fused_mma.cuh"

enum { LT_LOG = 12, LT = 1 << LT_LOG, LT_THREADS = 512, MAX_BATCH_GEMMS = 65535 };

/* ---- transform kernel ---- */

/* One pass of line_kernel over the chunks [off + c*L, off + (c+1)*L) (c < chunks) of every row.
 * Lines of nl = 2^nl_log values, LT/nl lines per CTA. A line is a contiguous run (strided = 0: line j
 * of a chunk holds positions j*nl + a) or every (L/nl)-th value (strided = 1: positions a*(L/nl) + j,
 * the second pass of chunks longer than LT). Per line: v = (k < n_src ? src[r*ld_src + k] * pre[k] : 0),
 * unnormalised FWHT of the nl values, then dst[r*ld_dst + k] = v * scale * post[k] + bias[k] for
 * k < n_dst (f32, or bf16 when dst_bf16). pre, post, bias are indexed by position k; NULL = none.
 * In place (src == dst, same ld) is allowed: a CTA reads its whole tile before it writes. */
struct LineOp {
  RowIo io;
  float scale;
  int64_t off, L, chunks, lines; /* lines = rows * chunks * (L / nl) */
  int nl_log, strided;
};
/* Row r and position k of value a of line q; false past the last line. */
__device__ __forceinline__ bool line_pos(const LineOp &o, int64_t q, int a, int64_t *r, int64_t *k) {
  if (q >= o.lines) return false;
  const int lpc_log = 63 - __clzll(o.L) - o.nl_log; /* lines per chunk = L / nl (powers of two) */
  const int64_t chunk = q >> lpc_log, j = q & ((1ll << lpc_log) - 1);
  *r = chunk / o.chunks;
  const int64_t c = chunk - *r * o.chunks;
  *k = o.off + c * o.L + (o.strided ? ((int64_t)a << lpc_log) + j : (j << o.nl_log) + a);
  return true;
}

/* Shared-memory word of tile index i: bits 5..9 flip bits 0..4, so the strided loads and stores (lanes
 * LT/L' apart, L' = nl = 2..32) hit 32 different banks; runs of 32 consecutive indices stay a
 * permutation of the banks. */
__device__ __forceinline__ int lt_word(int i) { return i ^ ((i >> 5) & 31); }

static __global__ void __launch_bounds__(LT_THREADS) line_kernel(const LineOp o) {
  __shared__ float sm[LT];
  const int g_log = LT_LOG - o.nl_log; /* lines per CTA = 2^g_log */
  const int64_t q0 = (int64_t)blockIdx.x << g_log;
  /* element e of the tile is value a of line g; consecutive threads take consecutive addresses */
  for (int e = threadIdx.x; e < LT; e += LT_THREADS) {
    const int g = o.strided ? e & ((1 << g_log) - 1) : e >> o.nl_log;
    const int a = o.strided ? e >> g_log : e & ((1 << o.nl_log) - 1);
    int64_t r, k;
    float v = 0.f;
    if (line_pos(o, q0 + g, a, &r, &k) && k < o.io.n_src) v = o.io.src[r * o.io.ld_src + k] * (o.io.pre ? o.io.pre[k] : 1.f);
    sm[lt_word((g << o.nl_log) + a)] = v;
  }
  /* butterfly t of stage h pairs (i, i + h), i = (t / h) * 2h + t % h: within a line, as nl/2 is a multiple of h */
  for (int h_log = 0; h_log < o.nl_log; ++h_log) {
    __syncthreads();
    const int h = 1 << h_log;
    for (int t = threadIdx.x; t < LT / 2; t += LT_THREADS) {
      const int i = ((t >> h_log) << (h_log + 1)) | (t & (h - 1));
      const float u = sm[lt_word(i)], w = sm[lt_word(i + h)];
      sm[lt_word(i)] = u + w;
      sm[lt_word(i + h)] = u - w;
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < LT; e += LT_THREADS) {
    const int g = o.strided ? e & ((1 << g_log) - 1) : e >> o.nl_log;
    const int a = o.strided ? e >> g_log : e & ((1 << o.nl_log) - 1);
    int64_t r, k;
    if (!line_pos(o, q0 + g, a, &r, &k) || k >= o.io.n_dst) continue;
    float v = sm[lt_word((g << o.nl_log) + a)] * o.scale;
    if (o.io.post) v *= o.io.post[k];
    if (o.io.bias) v += o.io.bias[k];
    rowio_store(o.io, r, k, v);
  }
}

static int line_launch(LineOp o, int64_t rows, cudaStream_t st) {
  o.lines = rows * o.chunks * (o.L >> o.nl_log);
  const int64_t per_cta = (int64_t)LT >> o.nl_log;
  const int64_t grid = (o.lines + per_cta - 1) / per_cta;
  if (grid > 0x7fffffff) return glq_error(GLQ_EINVAL, "cuda linear: %lld rows are too many for one transform", (long long)rows);
  line_kernel<<<(unsigned)grid, LT_THREADS, 0, st>>>(o);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

/* ---- transform plans on the device ---- */

struct DevBlock {
  int64_t off, len, L; /* L: FWHT order (power of two), len / L chunks */
  int p;               /* order of S (1: none) */
  const float *S;      /* device p x p, row-major: S for H, Sᵀ for Hᵀ */
  float scale;         /* 1/sqrt(len); 1 for the identity */
};

typedef void (*HrKernel)(const HrOp);

struct DevPlan {
  int64_t n;
  int nblocks;
  DevBlock *b;      /* host array */
  HrKernel hr_fn;   /* the one-CTA-per-row kernel, or NULL: multi-pass only */
  size_t hr_smem;   /* its dynamic shared memory */
  HrKernel hrc_fn;  /* the row-over-a-cluster kernel (sm_90, one-block plans), or NULL */
  size_t hrc_smem;
  const float *hr_fac; /* its Kronecker factor on the device (one of b[].S), or NULL */
  HrPlan hr;
};

/* Process-wide device state: the E8 codebook and the Hadamard factors (keyed by the CPU plan's
 * arrays, which live as long as the process), for the multi-pass GEMMs and the row kernels.
 * Created for the device current at first use and never freed: the driver
 * releases them at exit. */
struct FactorEntry {
  const float *host;
  float *dev;
  FactorEntry *next;
};
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static glq_cuda_codebook *g_cb;
static glq_cuda_e8p_tables *g_e8p;
static FactorEntry *g_factors;

static int shared_codebook(const glq_cuda_codebook **out) {
  pthread_mutex_lock(&g_mu);
  int rc = GLQ_OK;
  if (!g_cb) {
    const glq_e8_codebook *cb = glq_e8_codebook_get(65536);
    rc = cb ? glq_cuda_codebook_create(cb->table, &g_cb) : GLQ_ENOMEM;
  }
  *out = g_cb;
  pthread_mutex_unlock(&g_mu);
  return rc;
}

static int shared_e8p_tables(const glq_cuda_e8p_tables **out) {
  pthread_mutex_lock(&g_mu);
  int rc = GLQ_OK;
  if (!g_e8p) rc = glq_e8p_init() ? glq_errcode() : glq_cuda_e8p_tables_create(glq_e8p_packed_abs(), glq_e81b_table4(), &g_e8p);
  *out = g_e8p;
  pthread_mutex_unlock(&g_mu);
  return rc;
}

static int shared_factor(const float *host, int p, const float **out) {
  pthread_mutex_lock(&g_mu);
  FactorEntry *f = g_factors;
  while (f && f->host != host) f = f->next;
  int rc = GLQ_OK;
  if (!f) {
    const size_t bytes = (size_t)p * (size_t)p * sizeof(float);
    f = (FactorEntry *)calloc(1, sizeof *f);
    cudaError_t e = f ? cudaMalloc(&f->dev, bytes) : cudaErrorMemoryAllocation;
    if (e == cudaSuccess) e = cudaMemcpy(f->dev, host, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      if (f) cudaFree(f->dev);
      free(f);
      f = NULL;
      rc = glq_error(GLQ_ENOMEM, "cuda linear: Hadamard factor of order %d: %s", p, cudaGetErrorString(e));
    } else {
      f->host = host;
      f->next = g_factors;
      g_factors = f;
    }
  }
  *out = f ? f->dev : NULL;
  pthread_mutex_unlock(&g_mu);
  return rc;
}

/* The row kernel for Kronecker order p out of Ps; NULL when no kernel has order p. */
template <int P, int... Ps>
static HrKernel hr_select(int p) {
  if (p == P) return hr_kernel<P>;
  if constexpr (sizeof...(Ps) > 0) return hr_select<Ps...>(p);
  return NULL;
}

template <int P, int... Ps>
static HrKernel hrc_select(int p) {
  if (p == P) return hrc_kernel<P>;
  if constexpr (sizeof...(Ps) > 0) return hrc_select<Ps...>(p);
  return NULL;
}

/* The row kernel of plan h for pl (its factor: the device copy in pl's blocks), when there is one
 * and its row fits in shared memory. Sets the kernel's dynamic shared memory (the attribute only
 * grows, and is set here, at upload, never during a forward). */
static int plan_rows(const glq_hadamard *h, int transpose, DevPlan *pl) {
  int p, dev, max_smem;
  const float *s;
  pl->hr_fn = pl->hrc_fn = NULL;
  if (!hr_plan_of(h, transpose, &pl->hr, &p, &s)) return GLQ_OK;
  GLQ_CUDA_TRY(cudaGetDevice(&dev));
  GLQ_CUDA_TRY(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  pl->hr_smem = hr_kernel_smem_bytes(pl->hr.n, p);
  if (pl->hr_smem + sizeof(float) * 60 * 60 + sizeof(double) * GLQ_RMS_RED > (size_t)max_smem) return GLQ_OK; /* + static */
  HrKernel fn = p ? hr_select<HR_ORDERS>(p) : hr_kernel<0>;
  if (!fn) return GLQ_OK;
  pl->hr_fac = NULL;
  for (int i = 0; i < pl->nblocks && p; ++i)
    if (pl->b[i].S) pl->hr_fac = pl->b[i].S;
  cudaFuncAttributes fa;
  GLQ_CUDA_TRY(cudaFuncGetAttributes(&fa, fn));
  if ((size_t)fa.maxDynamicSharedSizeBytes < pl->hr_smem)
    GLQ_CUDA_TRY(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)pl->hr_smem));
  pl->hr_fn = fn;
  /* the cluster kernel: sm_90 and a plan of one block (small: its shared memory is ~16 KB at most for
   * the model sizes, under the default 48 KB) */
  int major = 0;
  GLQ_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major >= 9 && hrc_fits(pl->hr, p) && hrc_smem_bytes(pl->hr, p) + sizeof(float) * 60 * 60 + sizeof(double) * GLQ_RMS_RED <= 48 * 1024) {
    HrKernel cf = p ? hrc_select<HR_ORDERS>(p) : hrc_kernel<0>;
    /* only where the device can hold such a cluster (a partitioned GPU may not): else one CTA a row */
    cudaLaunchAttribute attr[2];
    const cudaLaunchConfig_t cfg = hrc_config(1, hrc_smem_bytes(pl->hr, p), attr);
    int nclusters = 0;
    if (cf && cudaOccupancyMaxActiveClusters(&nclusters, cf, &cfg) == cudaSuccess && nclusters > 0) {
      pl->hrc_fn = cf;
      pl->hrc_smem = cfg.dynamicSmemBytes;
    }
    (void)cudaGetLastError(); /* a refusal above is not an error of the layer */
  }
  return GLQ_OK;
}

/* The identity over n positions: one block of n chunks of 1 (the elementwise op). */
static int plan_identity(int64_t n, DevPlan *pl) {
  pl->b = (DevBlock *)calloc(1, sizeof(DevBlock));
  if (!pl->b) return glq_error(GLQ_ENOMEM, "cuda linear: out of host memory");
  pl->n = n;
  pl->nblocks = 1;
  pl->b[0].len = n;
  pl->b[0].L = 1;
  pl->b[0].p = 1;
  pl->b[0].scale = 1.f;
  return GLQ_OK;
}

/* The plan of h (transpose != 0: Hᵀ) on the device. */
static int plan_from_cpu(const glq_hadamard *h, int transpose, DevPlan *pl) {
  pl->n = glq_hadamard_dim(h);
  pl->nblocks = glq_hadamard_nblocks(h);
  pl->b = (DevBlock *)calloc((size_t)pl->nblocks, sizeof(DevBlock));
  if (!pl->b) return glq_error(GLQ_ENOMEM, "cuda linear: out of host memory");
  for (int i = 0; i < pl->nblocks; ++i) {
    glq_hadamard_block hb;
    glq_hadamard_block_at(h, i, &hb);
    DevBlock *b = &pl->b[i];
    if (hb.L < 1 || (hb.L & (hb.L - 1)) || hb.L > (int64_t)LT * LT)
      return glq_error(GLQ_EUNSUPPORTED, "cuda linear: Hadamard block of FWHT order %lld (n = %lld) is not supported",
                       (long long)hb.L, (long long)pl->n);
    b->off = hb.off;
    b->len = hb.len;
    b->L = hb.L;
    b->p = hb.p;
    b->scale = hr_block_scale(hb.len);
    if (hb.p > 1) {
      int rc = shared_factor(transpose ? hb.st : hb.s, hb.p, &b->S);
      if (rc) return rc;
    }
  }
  return plan_rows(h, transpose, pl);
}

static int plan_has_factor(const DevPlan *pl) {
  for (int i = 0; i < pl->nblocks; ++i)
    if (pl->b[i].S) return 1;
  return 0;
}

static int plan_has_long(const DevPlan *pl) {
  for (int i = 0; i < pl->nblocks; ++i)
    if (pl->b[i].L > LT) return 1;
  return 0;
}

/* f32 scratch per row that apply_plan needs: t1 (pre/padding materialised for a Kronecker block)
 * and t2 (Kronecker output, first pass of long chunks). */
static int64_t plan_t1(const DevPlan *pl, int pre_or_pad) { return pre_or_pad && plan_has_factor(pl) ? pl->n : 0; }
static int64_t plan_t2(const DevPlan *pl) { return plan_has_factor(pl) || plan_has_long(pl) ? pl->n : 0; }

/* The context's cuBLAS handle on stream st with lane's workspace (lanes 1..: allocated on first use,
 * which the eager step before a graph capture does). */
static int blas_on(glq_cuda_ctx *ctx, cudaStream_t st, int lane) {
  if (lane > 0 && !ctx->lane_blas_ws[lane]) GLQ_CUDA_TRY(cudaMalloc(&ctx->lane_blas_ws[lane], ctx->blas_ws_bytes));
  GLQ_CUBLAS_TRY(cublasSetStream(ctx->blas, st)); /* this resets the workspace: set ours after it */
  GLQ_CUBLAS_TRY(cublasSetWorkspace(ctx->blas, lane > 0 ? ctx->lane_blas_ws[lane] : ctx->blas_ws, ctx->blas_ws_bytes));
  return GLQ_OK;
}

/* dst[r, off + b*L + a] = sum_b' S[b][b'] src[r, off + b'*L + a] for the rows of block b. Column-major
 * view of one row: X (L x p, ld L) holds chunk b' in column b'; the row-major S buffer read
 * column-major is Sᵀ, so Y = X · Sᵀ. One strided batch over the rows. */
static int kron_gemm(glq_cuda_ctx *ctx, const DevBlock &b, const float *src, int64_t ld_src, float *dst,
                     int64_t ld_dst, int64_t rows, cudaStream_t st, int lane) {
  const float one = 1.f, zero = 0.f;
  int rc = blas_on(ctx, st, lane);
  if (rc) return rc;
  for (int64_t r0 = 0; r0 < rows; r0 += MAX_BATCH_GEMMS) {
    const int nb = (int)(rows - r0 < (int64_t)MAX_BATCH_GEMMS ? rows - r0 : (int64_t)MAX_BATCH_GEMMS);
    GLQ_CUBLAS_TRY(cublasGemmStridedBatchedEx(ctx->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)b.L, b.p, b.p, &one,
                                              src + r0 * ld_src + b.off, CUDA_R_32F, (int)b.L, ld_src, b.S,
                                              CUDA_R_32F, b.p, 0, &zero, dst + r0 * ld_dst + b.off, CUDA_R_32F,
                                              (int)b.L, ld_dst, nb, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
  }
  return GLQ_OK;
}

/* io (RowIo) over the plan's n positions of rows rows. t1, t2: f32 scratch of rows x n as
 * plan_t1/plan_t2 say; neither may alias src or dst. src is not modified. */
/* o, writing plain f32 rows of n into scratch dst instead (no scale, post, bias or bf16) */
static LineOp to_scratch(LineOp o, float *dst, int64_t n) {
  o.io.dst = dst;
  o.io.ld_dst = o.io.n_dst = n;
  o.io.dst_bf16 = 0;
  o.io.dst_lo = NULL;
  o.io.post = o.io.bias = NULL;
  o.scale = 1.f;
  return o;
}

static int apply_plan(glq_cuda_ctx *ctx, const DevPlan *pl, const RowIo &io, int64_t rows, float *t1, float *t2,
                      cudaStream_t st, int lane) {
  const int64_t n = pl->n;
  int rc = GLQ_OK;
  for (int i = 0; i < pl->nblocks && !rc; ++i) {
    const DevBlock &b = pl->b[i];
    LineOp o;
    memset(&o, 0, sizeof o);
    o.io = io;
    if (b.S) {
      if (o.io.pre || o.io.n_src < b.off + b.len) { /* materialise pre ⊙ pad(src) over the block for the GEMM */
        LineOp m = to_scratch(o, t1, n);
        m.off = b.off;
        m.L = 1;
        m.chunks = b.len;
        if ((rc = line_launch(m, rows, st))) break;
        o.io.src = t1;
        o.io.ld_src = o.io.n_src = n;
        o.io.pre = NULL;
      }
      if ((rc = kron_gemm(ctx, b, o.io.src, o.io.ld_src, t2, n, rows, st, lane))) break;
      o.io.src = t2;
      o.io.ld_src = o.io.n_src = n;
      o.io.pre = NULL;
    }
    o.scale = b.scale;
    o.off = b.off;
    o.L = b.L;
    o.chunks = b.len / b.L;
    const int l_log = 63 - __builtin_clzll((unsigned long long)b.L);
    if (b.L <= LT) {
      o.nl_log = l_log;
      rc = line_launch(o, rows, st);
    } else { /* low LT_LOG index bits into t2 (in place if the GEMM left the block there), then the high bits */
      LineOp lo = to_scratch(o, t2, n);
      lo.nl_log = LT_LOG;
      if ((rc = line_launch(lo, rows, st))) break;
      o.io.src = t2;
      o.io.ld_src = o.io.n_src = n;
      o.io.pre = NULL;
      o.nl_log = l_log - LT_LOG;
      o.strided = 1;
      rc = line_launch(o, rows, st);
    }
  }
  return rc;
}

/* One launch of the row kernel: B CTAs. */
static int hr_launch(const glq_cuda_ctx *ctx, const DevPlan *pl, const RowIo &io, int64_t rows, cudaStream_t st) {
  HrOp o;
  o.io = io;
  o.fac = pl->hr_fac;
  o.pl = pl->hr;
  return glq_launch_pdl(ctx, pl->hr_fn, dim3((unsigned)rows), dim3(HR_THREADS), pl->hr_smem, st, o);
}

/* One launch of the cluster kernel: B clusters of HRC_CTAS CTAs (programmatic dependent launch as above). */
static int hrc_launch(const glq_cuda_ctx *ctx, const DevPlan *pl, const RowIo &io, int64_t rows, cudaStream_t st) {
  HrOp o;
  o.io = io;
  o.fac = pl->hr_fac;
  o.pl = pl->hr;
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg = hrc_config(rows, pl->hrc_smem, attr);
  cfg.stream = st;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.numAttrs = ctx->pdl ? 2 : 1;
  GLQ_CUDA_TRY(cudaLaunchKernelEx(&cfg, pl->hrc_fn, o));
  return GLQ_OK;
}

/* apply_plan, by the cluster kernel or the row kernel when the plan has one and the batch is small. */
static int transform(glq_cuda_ctx *ctx, const DevPlan *pl, const RowIo &io, int64_t rows, float *t1, float *t2,
                     cudaStream_t st, int lane) {
  if (pl->hrc_fn && rows <= ctx->max_cluster_batch) return hrc_launch(ctx, pl, io, rows, st);
  if (pl->hr_fn && rows <= ctx->max_row_batch) return hr_launch(ctx, pl, io, rows, st);
  return apply_plan(ctx, pl, io, rows, t1, t2, st, lane);
}

/* ---- the layer ---- */

enum LinKind { LIN_DENSE, LIN_DENSE_BF16, LIN_E8, LIN_HIF4, LIN_E8P, LIN_TRELLIS };

struct glq_cuda_linear {
  LinKind kind;
  int64_t in, out;
  int64_t k_dev;          /* columns of the matmul input xb (e8: in_pad; hif4: rotated/padded in) */
  int64_t m_dev;          /* columns of the matmul output (e8, e8p, trellis: out_pad, yt) */
  void *w;                /* dense: out x in, f32 or bf16 */
  glq_cuda_e8 *e8;        /* e8 and e8p index planes */
  const glq_cuda_e8p_tables *e8p;
  glq_cuda_tr_layer *tr;
  glq_cuda_hif4 *hif4;
  float *bias, *su, *sv;  /* device vectors or NULL (sv: the input signs of e8 and hif4) */
  DevPlan pin, pout;      /* input transform (n = k_dev; none for dense f32) and output (n = m_dev) */
  size_t bytes;
};

extern "C" void glq_cuda_linear_free(glq_cuda_linear *l) {
  if (!l) return;
  glq_cuda_e8_free(l->e8);
  glq_cuda_tr_layer_free(l->tr);
  glq_cuda_hif4_free(l->hif4);
  cudaFree(l->w);
  cudaFree(l->bias);
  cudaFree(l->su);
  cudaFree(l->sv);
  free(l->pin.b);
  free(l->pout.b);
  free(l);
}

extern "C" int64_t glq_cuda_linear_in(const glq_cuda_linear *l) { return l->in; }
extern "C" int64_t glq_cuda_linear_out(const glq_cuda_linear *l) { return l->out; }
extern "C" size_t glq_cuda_linear_bytes(const glq_cuda_linear *l) { return l->bytes; }
extern "C" const char *glq_cuda_linear_kind(const glq_cuda_linear *l) {
  static const char *const names[] = {"dense", "dense-bf16", "e8", "hif4", "e8p", "trellis"};
  return names[l->kind];
}

/* Copy bytes from host h (nothing when h is NULL) to a new device array, counted in l->bytes. */
static int upload(glq_cuda_linear *l, const void *h, size_t bytes, void **d) {
  *d = NULL;
  if (!h) return GLQ_OK;
  cudaError_t e = cudaMalloc(d, bytes);
  if (e == cudaSuccess) e = cudaMemcpy(*d, h, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    cudaFree(*d);
    *d = NULL;
    return glq_error(e == cudaErrorMemoryAllocation ? GLQ_ENOMEM : GLQ_EIO, "cuda linear: uploading %zu bytes: %s",
                     bytes, cudaGetErrorString(e));
  }
  l->bytes += bytes;
  return GLQ_OK;
}

static int upload_f32(glq_cuda_linear *l, const float *h, int64_t n, float **d) {
  return upload(l, h, (size_t)n * sizeof(float), (void **)d);
}

static int upload_dense(glq_cuda_linear *l, const glq_linear *cpu, int dense_bf16) {
  const void *w;
  glq_dtype dt;
  int rc = glq_dense_linear_weight_of(cpu, &w, &dt);
  if (rc) return rc;
  if (dt != GLQ_F32 && dt != GLQ_BF16) return glq_error(GLQ_EUNSUPPORTED, "dense weight of dtype %s", glq_dtype_name(dt));
  l->kind = dense_bf16 ? LIN_DENSE_BF16 : LIN_DENSE;
  const glq_dtype want = dense_bf16 ? GLQ_BF16 : GLQ_F32;
  const int64_t n = l->out * l->in;
  const size_t bytes = (size_t)n * glq_dtype_size(want);
  void *conv = NULL;
  if (dt != want) { /* f32 -> bf16 rounds to nearest even; bf16 -> f32 is exact */
    if (!(conv = malloc(bytes))) return glq_error(GLQ_ENOMEM, "out of host memory converting the weight");
    glq_convert(w, dt, conv, want, n);
  }
  rc = upload(l, conv ? conv : w, bytes, &l->w);
  free(conv);
  if (!rc) rc = upload_f32(l, cpu->bias, l->out, &l->bias);
  if (!rc && dense_bf16) rc = plan_identity(l->in, &l->pin);
  if (!rc) rc = plan_identity(l->out, &l->pout);
  l->k_dev = l->in;
  l->m_dev = l->out;
  return rc;
}

/* The RHT around a rotated-weight matmul (e8, e8p, trellis): plans of kind `transform` for the padded sizes
 * mp, np (= m_dev, k_dev), the signs SU (mp), SV (np) and the bias (out). */
static int upload_rht(glq_cuda_linear *l, glq_hadamard_kind transform, const float *su, const float *sv, const float *bias) {
  const glq_hadamard *hm, *hn;
  int rc;
  if ((rc = glq_hadamard_plan(l->k_dev, transform, &hn)) || (rc = glq_hadamard_plan(l->m_dev, transform, &hm)))
    return rc;
  if ((rc = plan_from_cpu(hn, 0, &l->pin)) || (rc = plan_from_cpu(hm, 1, &l->pout))) return rc;
  if ((rc = upload_f32(l, su, l->m_dev, &l->su)) || (rc = upload_f32(l, sv, l->k_dev, &l->sv))) return rc;
  return upload_f32(l, bias, l->out, &l->bias);
}

/* kind "e8" (the shell codebook) and "e8p": the same index planes, different decodes */
static int upload_e8(glq_cuda_linear *l, const glq_linear *cpu) {
  glq_e8_linear_desc d;
  const glq_cuda_codebook *cb = NULL;
  int rc = glq_e8_linear_desc_of(cpu, &d);
  const int e8p = !rc && d.codebook == GLQ_CODEBOOK_E8P;
  if (!rc) rc = e8p ? shared_e8p_tables(&l->e8p) : shared_codebook(&cb);
  if (rc) return rc;
  l->kind = e8p ? LIN_E8P : LIN_E8;
  l->k_dev = d.in_pad;
  l->m_dev = d.out_pad;
  if ((rc = glq_cuda_e8_create(cb, d.bits, d.out_pad, d.in_pad, d.qidxs, d.qidxs2, d.wscale, d.inv_rs, &l->e8)))
    return rc;
  l->bytes += glq_cuda_e8_bytes(l->e8);
  return upload_rht(l, d.transform, d.su, d.sv, d.bias);
}

static int upload_dequantized(glq_cuda_linear *l, const glq_linear *cpu);

/* kind "trellis": 3inst codes at 2-4 bits on the trellis kernels; other codes dequantized once */
static int upload_trellis(glq_cuda_linear *l, const glq_linear *cpu) {
  glq_trellis_linear_desc d;
  int rc = glq_trellis_linear_desc_of(cpu, &d);
  if (rc) return rc;
  if (d.variant != GLQ_TRELLIS_3INST || d.K < 2 || d.K > 4) return upload_dequantized(l, cpu);
  l->kind = LIN_TRELLIS;
  l->k_dev = d.np;
  l->m_dev = d.mp;
  if ((rc = glq_cuda_tr_layer_create(d.K, d.mp, d.np, d.words, d.wscale, &l->tr))) return rc;
  l->bytes += glq_cuda_tr_layer_bytes(l->tr);
  return upload_rht(l, d.transform, d.su, d.sv, d.bias);
}

static int upload_hif4(glq_cuda_linear *l, const glq_linear *cpu) {
  glq_hif4_linear_desc d;
  int rc = glq_hif4_linear_desc_of(cpu, &d);
  if (rc) return rc;
  l->kind = LIN_HIF4;
  const int64_t units = d.out * d.nb, k_in = d.signs ? glq_rht_pad(d.in) : d.in;
  l->k_dev = glq_round_up(k_in, 8); /* the kernel's column granularity; x is zero beyond k_in */
  l->m_dev = d.out;
  uint8_t *h = (uint8_t *)malloc((size_t)units * GLQ_HIF4_UNIT_BYTES);
  if (!h) return glq_error(GLQ_ENOMEM, "out of host memory for %lld HiF4 units", (long long)units);
  glq_hif4_buf b = {h, h + units, h + 2 * units, h + 4 * units};
  rc = glq_hif4_linear_fields_of(cpu, &b);
  for (int64_t u = 0; u < units && !rc; ++u)
    if (b.e6m2[u] == GLQ_HIF4_NAN_CODE)
      rc = glq_error(GLQ_EUNSUPPORTED, "unit %lld (row %lld) has the NaN scale code 0x%02X, which the GPU kernel does not decode",
                     (long long)u, (long long)(u / d.nb), GLQ_HIF4_NAN_CODE);
  if (!rc) rc = glq_cuda_hif4_create(d.out, l->k_dev, b.e6m2, b.e1_8, b.e1_16, b.s1p2, &l->hif4);
  free(h);
  if (rc) return rc;
  l->bytes += glq_cuda_hif4_bytes(l->hif4);
  if (d.signs) {
    const glq_hadamard *hn;
    if ((rc = glq_hadamard_plan(l->k_dev, GLQ_HADAMARD_DEFAULT, &hn)) || (rc = plan_from_cpu(hn, 0, &l->pin))) return rc;
    if ((rc = upload_f32(l, d.signs, l->k_dev, &l->sv))) return rc;
  } else if ((rc = plan_identity(l->k_dev, &l->pin))) {
    return rc;
  }
  if ((rc = plan_identity(l->out, &l->pout))) return rc;
  return upload_f32(l, d.bias, d.out, &l->bias);
}

/* A layer with no GPU kernel (a trellis hyb code, or a kind added later): its weight dequantized once on the
 * CPU and run as a dense f32 layer, so every checkpoint the CPU reads also runs on the GPU (at dense speed and
 * memory). */
static int upload_dequantized(glq_cuda_linear *l, const glq_linear *cpu) {
  if (!cpu->vt->dequantize) return glq_error(GLQ_EUNSUPPORTED, "layer kind \"%s\" has no GPU implementation", cpu->vt->kind);
  const int64_t n = l->out * l->in;
  float *w = (float *)malloc((size_t)n * sizeof(float));
  if (!w) return glq_error(GLQ_ENOMEM, "out of host memory dequantizing the weight");
  int rc = cpu->vt->dequantize(cpu, w);
  l->kind = LIN_DENSE;
  if (!rc) rc = upload(l, w, (size_t)n * sizeof(float), &l->w);
  free(w);
  if (!rc) rc = upload_f32(l, cpu->bias, l->out, &l->bias);
  if (!rc) rc = plan_identity(l->out, &l->pout);
  l->k_dev = l->in;
  l->m_dev = l->out;
  return rc;
}

extern "C" int glq_cuda_linear_upload(glq_cuda_ctx *ctx, const struct glq_linear *cpu, int dense_bf16,
                                      glq_cuda_linear **out) {
  (void)ctx; /* layers are per device, not per context */
  *out = NULL;
  if (!cpu || !cpu->vt) return glq_error(GLQ_EINVAL, "glq_cuda_linear_upload: no layer");
  const char *kind = cpu->vt->kind;
  glq_cuda_linear *l = (glq_cuda_linear *)calloc(1, sizeof *l);
  if (!l) return glq_error(GLQ_ENOMEM, "glq_cuda_linear_upload: out of host memory");
  l->in = cpu->in;
  l->out = cpu->out;
  int rc;
  if (!strcmp(kind, "dense")) rc = upload_dense(l, cpu, dense_bf16);
  else if (!strcmp(kind, "e8") || !strcmp(kind, "e8p")) rc = upload_e8(l, cpu);
  else if (!strcmp(kind, "trellis")) rc = upload_trellis(l, cpu);
  else if (!strcmp(kind, "hif4")) rc = upload_hif4(l, cpu);
  else rc = upload_dequantized(l, cpu);
  if (rc) {
    glq_error_prefix("glq_cuda_linear_upload (%s %lld x %lld)", kind, (long long)cpu->out, (long long)cpu->in);
    glq_cuda_linear_free(l);
    return rc;
  }
  *out = l;
  return GLQ_OK;
}

/* ---- scratch and forward ---- */

/* 1 for the kinds whose matmul output yt goes through an output transform (SU, Hmᵀ, crop). */
static int rotated_out(const glq_cuda_linear *l) { return l->kind == LIN_E8 || l->kind == LIN_E8P || l->kind == LIN_TRELLIS; }

/* Per-row scratch of forward: f32 t1 and t2 (t1 also holds the E8 matmul output yt) and bf16 xb (for the
 * quantized kinds two rows: hi, then lo of a split input). */
static void scratch_per_row(const glq_cuda_linear *l, int64_t *t1, int64_t *t2, int64_t *xb) {
  *t1 = *t2 = *xb = 0;
  if (l->kind == LIN_DENSE) return;
  *xb = l->k_dev;
  if (l->kind == LIN_DENSE_BF16) return;
  *xb = 2 * l->k_dev;
  const int pre_or_pad = l->sv != NULL || l->in < l->k_dev;
  *t1 = plan_t1(&l->pin, pre_or_pad);
  *t2 = plan_t2(&l->pin);
  if (rotated_out(l)) {
    if (l->m_dev > *t1) *t1 = l->m_dev;
    if (plan_t2(&l->pout) > *t2) *t2 = plan_t2(&l->pout);
  }
  *t1 = glq_round_up(*t1, 8); /* keeps xb 16-byte aligned for the fused kernels */
  *t2 = glq_round_up(*t2, 8);
}

/* Scratch for B rows: the context's linear scratch and, for batches past the fused threshold, the
 * dequantize scratch of the E8/HiF4 matmul. Allocates only when they are too small. */
static int ensure_scratch(glq_cuda_ctx *ctx, const glq_cuda_linear *l, int64_t B, int lane) {
  int64_t t1, t2, xb;
  scratch_per_row(l, &t1, &t2, &xb);
  const size_t need = (size_t)B * ((size_t)(t1 + t2) * sizeof(float) + (size_t)xb * sizeof(uint16_t));
  if (need > ctx->lin_ws_bytes[lane]) {
    GLQ_CUDA_TRY(cudaFree(ctx->lin_ws[lane]));
    ctx->lin_ws[lane] = NULL;
    ctx->lin_ws_bytes[lane] = 0;
    GLQ_CUDA_TRY(cudaMalloc(&ctx->lin_ws[lane], need));
    ctx->lin_ws_bytes[lane] = need;
  }
  if ((l->e8 || l->tr || l->hif4) && B > ctx->max_fused_batch) return glq_cuda_ctx_reserve(ctx, l->m_dev, l->k_dev);
  return GLQ_OK;
}

extern "C" int glq_cuda_linear_reserve(glq_cuda_ctx *ctx, glq_cuda_linear *l, int64_t max_b) {
  if (max_b < 1 || max_b > (1 << 24))
    return glq_error(GLQ_EINVAL, "glq_cuda_linear_reserve: batch %lld out of range", (long long)max_b);
  return ensure_scratch(ctx, l, max_b, 0);
}

/* y (B x out) = x (B x k) . Wᵀ for the dense weights; x f32 or bf16 as the layer stores W. */
static int dense_gemm(glq_cuda_ctx *ctx, const glq_cuda_linear *l, const void *x, int64_t B, float *y, cudaStream_t st,
                      int lane) {
  const float one = 1.f, zero = 0.f;
  const int bf16 = l->kind == LIN_DENSE_BF16;
  const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  int rc = blas_on(ctx, st, lane);
  if (rc) return rc;
  /* column-major: yᵀ (out x B) = W (row-major out x in, read as in x out: op T) · xᵀ (in x B) */
  GLQ_CUBLAS_TRY(cublasGemmEx(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)l->out, (int)B, (int)l->in, &one, l->w, t,
                              (int)l->in, x, t, (int)l->in, &zero, y, CUDA_R_32F, (int)l->out,
                              bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
  return GLQ_OK;
}

extern "C" int glq_cuda_linear_forward(glq_cuda_ctx *ctx, glq_cuda_linear *l, const float *x, int64_t B, float *y,
                                       void *stream) {
  return glq_cuda_linear_forward_fused(ctx, l, x, B, y, stream, 0, NULL);
}

extern "C" int glq_cuda_linear_forward_lane(glq_cuda_ctx *ctx, glq_cuda_linear *l, const float *x, int64_t B, float *y,
                                            void *stream, int lane) {
  return glq_cuda_linear_forward_fused(ctx, l, x, B, y, stream, lane, NULL);
}

/* The E8P matmul with the input transform io (the plan's one FWHT block) in its prologue */
static int e8p_prologue(glq_cuda_ctx *ctx, const glq_cuda_linear *l, const RowIo &io, int split, int64_t B, float *y,
                        cudaStream_t st) {
  FusedRot rot;
  memset(&rot, 0, sizeof rot);
  rot.io = io;
  rot.lg = l->pin.hr.b[0].lg;
  rot.scale = l->pin.hr.b[0].scale;
  return glq_cuda_e8p_matmul_rot(ctx, l->e8p, l->e8, &rot, split, B, y, 0, st);
}

/* whether transform() runs plan pl for `rows` rows as one row or cluster kernel */
static int row_kernel_for(const glq_cuda_ctx *ctx, const DevPlan *pl, int64_t rows) {
  return (pl->hrc_fn && rows <= ctx->max_cluster_batch) || (pl->hr_fn && rows <= ctx->max_row_batch);
}

extern "C" int glq_cuda_linear_fusable(const glq_cuda_ctx *ctx, const glq_cuda_linear *l, int64_t B) {
  if (!ctx || !l || B < 1 || B > ctx->max_fused_batch) return 0;
  int f = 0;
  if (l->kind != LIN_DENSE && l->kind != LIN_DENSE_BF16 && row_kernel_for(ctx, &l->pin, B)) f |= GLQ_CUDA_FUSE_INPUT;
  if (rotated_out(l) && row_kernel_for(ctx, &l->pout, B)) f |= GLQ_CUDA_FUSE_ACCUMULATE;
  return f;
}

/* Whether an E8P layer runs its input transform in the matmul's prologue at B rows (glq_cuda_ctx_set_prologue): a
 * plan of one plain FWHT block over the whole, unpadded input, on the fused path with the tile shape of cfg 2. */
static int prologue_for(const glq_cuda_ctx *ctx, const glq_cuda_linear *l, int64_t B) {
  const HrPlan &h = l->pin.hr;
  return ctx->prologue && l->kind == LIN_E8P && B >= 1 && B <= FUSED_ROT_B && B <= ctx->max_fused_batch &&
         (ctx->fused_cfg < 0 || ctx->fused_cfg == 2) && l->pin.hr_fn && h.nblocks == 1 && !h.b[0].kron && h.b[0].off == 0 &&
         h.b[0].len == l->k_dev && (int64_t)1 << h.b[0].lg == l->k_dev && l->in == l->k_dev;
}

static int overlaps(const void *a, int64_t na, const void *b, int64_t nb) {
  return (const char *)a < (const char *)b + nb && (const char *)b < (const char *)a + na;
}

extern "C" int glq_cuda_linear_forward_fused(glq_cuda_ctx *ctx, glq_cuda_linear *l, const float *x, int64_t B, float *y,
                                             void *stream, int lane, const glq_cuda_fuse *f) {
  if (B < 0 || B > (1 << 24)) return glq_error(GLQ_EINVAL, "glq_cuda_linear_forward: batch %lld out of range", (long long)B);
  if (lane < 0 || lane >= GLQ_CUDA_LANES || (lane > 0 && B > ctx->max_fused_batch))
    return glq_error(GLQ_EINVAL, "glq_cuda_linear_forward: lane %d with batch %lld (lanes 1.. take batches up to %lld)",
                     lane, (long long)B, (long long)ctx->max_fused_batch);
  if (B == 0) return GLQ_OK;
  const int64_t xbytes = B * l->in * (int64_t)sizeof(float), ybytes = B * l->out * (int64_t)sizeof(float);
  if (overlaps(x, xbytes, y, ybytes)) return glq_error(GLQ_EINVAL, "glq_cuda_linear_forward: y overlaps x");
  if (f) {
    const int want = (f->norm_w || f->gate ? GLQ_CUDA_FUSE_INPUT : 0) | (f->accumulate ? GLQ_CUDA_FUSE_ACCUMULATE : 0);
    if (want & ~glq_cuda_linear_fusable(ctx, l, B))
      return glq_error(GLQ_EUNSUPPORTED, "glq_cuda_linear_forward: a %s layer %lld -> %lld cannot fold %s%s%s at batch %lld",
                       glq_cuda_linear_kind(l), (long long)l->in, (long long)l->out, f->norm_w ? "RMSNorm " : "",
                       f->gate ? "SwiGLU " : "", f->accumulate ? "the residual add " : "", (long long)B);
    if (f->gate && overlaps(f->gate, xbytes, y, ybytes)) return glq_error(GLQ_EINVAL, "glq_cuda_linear_forward: y overlaps the gate");
  }
  int rc = ensure_scratch(ctx, l, B, lane);
  if (rc) return rc;
  cudaStream_t st = (cudaStream_t)stream;
  int64_t n1, n2, nx;
  scratch_per_row(l, &n1, &n2, &nx);
  float *t1 = (float *)ctx->lin_ws[lane], *t2 = t1 + B * n1;
  uint16_t *xb = (uint16_t *)(t2 + B * n2);
  /* the quantized kinds on the fused path take the rotated input split into bf16 hi + lo (glq_cuda_ctx_set_split_inputs) */
  const uint16_t *xlo = l->kind != LIN_DENSE && l->kind != LIN_DENSE_BF16 && ctx->split_inputs && B <= ctx->max_fused_batch
                            ? xb + B * l->k_dev : NULL;
  const RowIo in = {x, l->in, l->in, l->sv, xb, l->k_dev, l->k_dev, 1, NULL, NULL, (void *)xlo,
                    f ? f->gate : NULL, f ? f->norm_w : NULL, f ? f->norm_eps : 0.f, 0};
  const int pro = prologue_for(ctx, l, B);
  if (l->kind != LIN_DENSE && !pro) { /* xb = bf16(H (sv ⊙ pad(x))), H the identity for dense-bf16 and plain HiF4 */
    if ((rc = transform(ctx, &l->pin, in, B, t1, t2, st, lane))) return rc;
  }
  switch (l->kind) {
    case LIN_DENSE: rc = dense_gemm(ctx, l, x, B, y, st, lane); break;
    case LIN_DENSE_BF16: rc = dense_gemm(ctx, l, xb, B, y, st, lane); break;
    case LIN_HIF4: rc = glq_cuda_hif4_matmul(ctx, l->hif4, xb, xlo, B, y, 0, GLQ_CUDA_AUTO, stream); break;
    case LIN_E8:
    case LIN_E8P:
    case LIN_TRELLIS: {
      rc = l->kind == LIN_E8    ? glq_cuda_e8_matmul(ctx, l->e8, xb, xlo, B, t1, 0, GLQ_CUDA_AUTO, stream)
           : l->kind == LIN_E8P && pro ? e8p_prologue(ctx, l, in, xlo != NULL, B, t1, st)
           : l->kind == LIN_E8P ? glq_cuda_e8p_matmul(ctx, l->e8p, l->e8, xb, xlo, B, t1, 0, GLQ_CUDA_AUTO, st)
                                : glq_cuda_tr_layer_matmul(ctx, l->tr, xb, xlo, B, t1, 0, GLQ_CUDA_AUTO, st);
      if (rc) return rc;
      const RowIo out = {t1, l->m_dev, l->m_dev, NULL, y, l->out, l->out, 0, l->su, l->bias, NULL,
                         NULL, NULL, 0.f, f ? f->accumulate : 0};
      return transform(ctx, &l->pout, out, B, NULL, t2, st, lane); /* y = crop(SU ⊙ Hmᵀ yt) + bias */
    }
  }
  if (rc || !l->bias) return rc;
  const RowIo bias = {y, l->out, l->out, NULL, y, l->out, l->out, 0, NULL, l->bias, NULL}; /* in place, elementwise */
  return apply_plan(ctx, &l->pout, bias, B, NULL, NULL, st, lane);
}

/* ---- the standalone row operations (rowops.cuh; the fused path folds the same device functions) ---- */

static __global__ void __launch_bounds__(GLQ_RMS_RED) k_rmsnorm(const float *in, const float *w, float *out, int64_t d, float eps) {
  __shared__ double sh[GLQ_RMS_RED];
  const float *x = in + blockIdx.x * d;
  float *y = out + blockIdx.x * d;
  const float s = glq_rms_scale<GLQ_RMS_RED>(x, d, eps, sh);
  for (int64_t i0 = threadIdx.x; i0 < d; i0 += 8 * GLQ_RMS_RED) { /* 8 loads in flight before the stores */
    float xv[8], wv[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const int64_t i = i0 + u * GLQ_RMS_RED;
      xv[u] = i < d ? x[i] : 0.f;
      wv[u] = i < d ? w[i] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < 8; ++u)
      if (i0 + u * GLQ_RMS_RED < d) y[i0 + u * GLQ_RMS_RED] = glq_rms_apply(xv[u], s, wv[u]);
  }
}

static __global__ void k_swiglu(float *g, const float *u, int64_t n) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) g[i] = glq_silu_mul(g[i], u[i]);
}

static __global__ void k_add(float *h, const float *t, int64_t n) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) h[i] = __fadd_rn(h[i], t[i]);
}

static unsigned grid_of(int64_t n, int t) { return (unsigned)((n + t - 1) / t); }

extern "C" int glq_cuda_rmsnorm_rows(const float *x, const float *w, float *y, int64_t rows, int64_t d, float eps, void *stream) {
  if (rows < 1) return GLQ_OK;
  k_rmsnorm<<<(unsigned)rows, GLQ_RMS_RED, 0, (cudaStream_t)stream>>>(x, w, y, d, eps);
  GLQ_CUDA_TRY(cudaGetLastError());
  return GLQ_OK;
}

extern "C" int glq_cuda_swiglu(float *g, const float *u, int64_t n, void *stream) {
  if (n < 1) return GLQ_OK;
  k_swiglu<<<grid_of(n, 256), 256, 0, (cudaStream_t)stream>>>(g, u, n);
  GLQ_CUDA_TRY(cudaGetLastError());
  return GLQ_OK;
}

extern "C" int glq_cuda_add(float *h, const float *t, int64_t n, void *stream) {
  if (n < 1) return GLQ_OK;
  k_add<<<grid_of(n, 256), 256, 0, (cudaStream_t)stream>>>(h, t, n);
  GLQ_CUDA_TRY(cudaGetLastError());
  return GLQ_OK;
}

/* ---- random layers ---- */

static float uniform_pm1(uint64_t *s) { return (float)((double)(glq_splitmix64(s) >> 11) * 0x1p-52 - 1.0); }

/* A 3inst trellis layer at K bits: random bitstreams (any stream decodes), +-1 signs, unit gain. */
static int random_trellis(int K, int64_t out, int64_t in, uint64_t *s, glq_linear **cpu) {
  if (K < 2 || K > 4) return glq_error(GLQ_EINVAL, "trellis bits %d not in {2, 3, 4}", K);
  glq_trellis_artifacts a;
  memset(&a, 0, sizeof a);
  a.variant = GLQ_TRELLIS_3INST, a.K = K, a.m = out, a.n = in;
  const int64_t mp = glq_trellis_pad(out), np = glq_trellis_pad(in), one = 1;
  const int64_t pshape[2] = {(mp / 16) * (np / 16), 16 * K};
  int rc = glq_tensor_new(GLQ_I16, 2, pshape, &a.packed);
  if (!rc) rc = glq_tensor_new(GLQ_F16, 1, &mp, &a.su);
  if (!rc) rc = glq_tensor_new(GLQ_F16, 1, &np, &a.sv);
  if (!rc) rc = glq_tensor_new(GLQ_F32, 0, &one, &a.wscale);
  if (!rc) {
    int16_t *p = (int16_t *)glq_tensor_data(&a.packed);
    for (int64_t i = 0; i < pshape[0] * pshape[1]; ++i) p[i] = (int16_t)(glq_splitmix64(s) & 0xFFFF);
    uint16_t *su = (uint16_t *)glq_tensor_data(&a.su), *sv = (uint16_t *)glq_tensor_data(&a.sv);
    for (int64_t i = 0; i < mp; ++i) su[i] = glq_f32_to_f16((glq_splitmix64(s) & 1) ? -1.f : 1.f);
    for (int64_t i = 0; i < np; ++i) sv[i] = glq_f32_to_f16((glq_splitmix64(s) & 1) ? -1.f : 1.f);
    *(float *)glq_tensor_data(&a.wscale) = (float)(1.0 / sqrt((double)in)); /* 3inst values have rms about 1 */
    rc = glq_trellis_linear_new(&a, NULL, cpu);
  }
  glq_trellis_artifacts_free(&a);
  return rc;
}

static int random_cpu(const char *kind, int bits, int64_t out, int64_t in, uint64_t seed, glq_linear **cpu) {
  uint64_t s = seed;
  int rc;
  if (!strcmp(kind, "dense")) {
    const int64_t shape[2] = {out, in};
    glq_tensor w;
    if ((rc = glq_tensor_new(GLQ_BF16, 2, shape, &w))) return rc;
    uint16_t *p = (uint16_t *)glq_tensor_data(&w);
    const float a = (float)sqrt(3.0 / (double)in); /* uniform, variance 1/in */
    for (int64_t i = 0; i < out * in; ++i) p[i] = glq_f32_to_bf16(a * uniform_pm1(&s));
    rc = glq_dense_linear_new(&w, NULL, cpu);
    glq_tensor_release(&w);
    return rc;
  }
  if (!strcmp(kind, "e8") || !strcmp(kind, "e8p")) {
    if (bits < 2 || bits > 4) return glq_error(GLQ_EINVAL, "%s bits %d not in {2, 3, 4}", kind, bits);
    glq_e8_linear_desc d;
    memset(&d, 0, sizeof d);
    d.codebook = strcmp(kind, "e8p") ? GLQ_CODEBOOK_E8 : GLQ_CODEBOOK_E8P;
    d.out = out;
    d.in = in;
    d.out_pad = glq_rht_pad(out);
    d.in_pad = glq_rht_pad(in);
    d.bits = bits;
    d.wscale = (float)(1.0 / sqrt((double)in)); /* codebook coordinates have rms about 1: unit gain */
    if (d.codebook == GLQ_CODEBOOK_E8P) d.wscale *= 0.6f; /* E8P's rms is about 1.6 */
    d.inv_rs = bits == 3 ? 1.f / 2.f : 1.f / 3.75f; /* the quantizer's default residual scales */
    const size_t nq = (size_t)(d.out_pad * d.in_pad / 8);
    int16_t *q = (int16_t *)malloc(nq * sizeof(int16_t) * (bits > 2 ? 2 : 1));
    float *su = (float *)malloc((size_t)(d.out_pad + d.in_pad) * sizeof(float));
    if (!q || !su) {
      free(q);
      free(su);
      return glq_error(GLQ_ENOMEM, "out of host memory for a random %lld x %lld E8 layer", (long long)out, (long long)in);
    }
    for (size_t i = 0; i < nq; ++i) q[i] = (int16_t)(glq_splitmix64(&s) & 0xFFFF);
    for (size_t i = 0; bits > 2 && i < nq; ++i) q[nq + i] = (int16_t)(glq_splitmix64(&s) & (bits == 3 ? 0xFF : 0xFFFF));
    for (int64_t i = 0; i < d.out_pad + d.in_pad; ++i) su[i] = (glq_splitmix64(&s) & 1) ? -1.f : 1.f;
    d.qidxs = q;
    d.qidxs2 = bits > 2 ? q + nq : NULL;
    d.su = su;
    d.sv = su + d.out_pad;
    rc = glq_e8_linear_new(&d, cpu);
    free(q);
    free(su);
    return rc;
  }
  if (!strcmp(kind, "trellis")) return random_trellis(bits, out, in, &s, cpu);
  const int rht = !strcmp(kind, "hif4-rht");
  if (rht || !strcmp(kind, "hif4")) {
    const int64_t shape[2] = {out, in}, units = out * glq_hif4_nblocks(in), np = glq_rht_pad(in);
    glq_hif4_fields f;
    glq_tensor signs = {0};
    if ((rc = glq_hif4_fields_new(2, shape, 1, &f))) return rc;
    if (rht && (rc = glq_tensor_new(GLQ_F32, 1, &np, &signs))) {
      glq_hif4_fields_release(&f);
      return rc;
    }
    for (int64_t i = 0; rht && i < np; ++i) ((float *)glq_tensor_data(&signs))[i] = (glq_splitmix64(&s) & 1) ? -1.f : 1.f;
    glq_hif4_buf b = glq_hif4_fields_buf(&f);
    /* a weight is E6M2/4 * q with |q| <= 28 (rms about 10): E6M2 near 0.4/sqrt(in) gives unit gain */
    const int e0 = 48 + (int)floor(log2(0.4 / sqrt((double)in)));
    for (int64_t u = 0; u < units; ++u) {
      const uint64_t r = glq_splitmix64(&s);
      int e = e0 + (int)(r & 1);
      e = e < 1 ? 1 : e > 62 ? 62 : e; /* code 0xFF (NaN) is never drawn */
      b.e6m2[u] = (uint8_t)(e << 2 | (int)(r >> 1 & 3));
      b.e1_8[u] = (uint8_t)(r >> 8);
      b.e1_16[2 * u] = (uint8_t)(r >> 16);
      b.e1_16[2 * u + 1] = (uint8_t)(r >> 24);
    }
    for (int64_t i = 0; i < 32 * units; i += 8) {
      const uint64_t r = glq_splitmix64(&s);
      for (int j = 0; j < 8 && i + j < 32 * units; ++j) b.s1p2[i + j] = (uint8_t)(r >> (8 * j));
    }
    rc = glq_hif4_linear_new(&f, NULL, rht ? &signs : NULL, GLQ_HIF4_KERNEL_AUTO, cpu);
    glq_hif4_fields_release(&f);
    if (rht) glq_tensor_release(&signs);
    return rc;
  }
  return glq_error(GLQ_EINVAL, "unknown kind \"%s\" (dense, e8, e8p, trellis, hif4, hif4-rht)", kind);
}

extern "C" int glq_cuda_linear_random(glq_cuda_ctx *ctx, const char *kind, int bits, int64_t out, int64_t in,
                                      uint64_t seed, glq_cuda_linear **out_l) {
  *out_l = NULL;
  glq_linear *cpu = NULL;
  int rc = !kind ? glq_error(GLQ_EINVAL, "no kind (dense, e8, e8p, trellis, hif4, hif4-rht)")
           : out < 1 || in < 1 ? glq_error(GLQ_EINVAL, "shape %lld x %lld", (long long)out, (long long)in)
                               : random_cpu(kind, bits, out, in, seed, &cpu);
  if (!rc) rc = glq_cuda_linear_upload(ctx, cpu, 1, out_l);
  glq_linear_free(cpu);
  if (rc) glq_error_prefix("glq_cuda_linear_random");
  return rc;
}
