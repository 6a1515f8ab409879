/* hadamard_rows.cuh - one Hadamard transform per row, a whole row in one CTA (internal; linear.cu, and the fused
 * kernels' prologue in fused_mma.cuh). Included after common.cuh.
 *
 * For small batches one launch does what linear.cu's multi-pass path needs up to five for:
 *   dst[k] = post[k] * (H (pre ⊙ pad(src)))[k] + bias[k] for k < n_dst, f32 or bf16,
 * where H is a CPU plan (hadamard.h) whose Kronecker blocks S (x) H_L / sqrt(len) all have one order P
 * out of HR_ORDERS (plain FWHT blocks: any number, any L). One CTA per row, the row in shared memory:
 *  1. load: pad and pre-multiply into shared memory, HR_U loads in flight per thread (hr_in_each). Kronecker
 *     blocks go to a staging area and then through S (x) I, which commutes with I (x) H_L: a thread holds
 *     the P values b*L + a of one column a in registers and writes rows 4g .. 4g+3 of it. S (P x P, at most
 *     60 x 60) is copied to shared memory first; a term is one FFMA by an exact +-1 read from there. (A
 *     __constant__ table, the first design, missed the constant cache on every launch.)
 *  2. the FWHT of every chunk of L values, in passes of up to 5 index bits: a thread takes the 2^r
 *     values of one line into registers, runs r butterfly stages and writes them back. Pass 0 takes
 *     bits 0..4 (a line is 2^r consecutive values, one line per lane), pass q >= 1 bits 5q .. 5q+4
 *     (consecutive lanes take consecutive positions). Shared memory holds position k at k + k/32, which
 *     keeps both patterns free of bank conflicts.
 *  3. store: the block's 1/sqrt(len), post, bias, cropping to n_dst, f32 or bf16 rounding.
 * Every value is computed by one thread in a fixed order: deterministic, no atomics. */
#ifndef GLQ_CUDA_HADAMARD_ROWS_CUH
#define GLQ_CUDA_HADAMARD_ROWS_CUH
#include <cooperative_groups.h>
#include <math.h>
#include <string.h>
#include "rowops.cuh"
extern "C" {
#include "../src/quant/hadamard.h"
}

enum { HR_THREADS = 512, HR_MAX_BLOCKS = 16, HR_PASS_LOG = 5 };

/* Kronecker orders with a kernel: the model dimensions 1536 = 12*128, 2560 = 20*128, 14336 = 28*512,
 * 576 = 36*16, 2816 = 44*64, 960 = 60*16 (and their multiples). Larger orders cost P adds a value
 * and P registers a thread; they take the multi-pass path. */
#define HR_ORDERS 12, 20, 28, 36, 44, 60

struct HrBlock {
  int off, len, lg; /* positions [off, off + len), FWHT order L = 2^lg */
  int kron;         /* 1: S (x) H_L with S of the kernel's order P */
  float scale;      /* 1/sqrt(len) */
};

struct HrPlan {
  int n, nblocks;
  HrBlock b[HR_MAX_BLOCKS];
};

/* Where a transform reads and writes (the row kernel, linear.cu's line kernel and plans):
 *   dst (ld_dst; positions < n_dst written) = post ⊙ (H · (pre ⊙ pad(src))) + bias,
 * src read at positions < n_src (the rest is zero); dst f32, or bf16 when dst_bf16; NULL = none.
 * dst_lo (bf16 dst only; NULL = none, same ld): the remainders v - bf16(v) rounded to bf16, so that hi + lo
 * carries v to ~2^-17 relative (the split matmul input of glq_cuda_ctx_set_split_inputs).
 * The decode step's neighbouring operations, folded in (rowops.cuh; the row and cluster kernels only):
 *   gate (same layout as src): src is replaced by silu(gate) ⊙ src (the MLP's SwiGLU before down);
 *   norm_w (n_src values): src is replaced by RMSNorm(src row, norm_eps) ⊙ norm_w (before q, k, v, gate, up);
 *   accumulate (f32 dst): dst += the value instead of dst = it (the residual add after o and down). */
struct RowIo {
  const float *src;
  int64_t ld_src, n_src;
  const float *pre; /* n values or NULL */
  void *dst;
  int64_t ld_dst, n_dst;
  int dst_bf16;
  const float *post, *bias; /* n_dst values or NULL */
  void *dst_lo;
  const float *gate, *norm_w;
  float norm_eps;
  int accumulate;
};

/* dst[r, k] (and dst_lo[r, k]) = v, as io says; old: dst[r, k] as read before (used when accumulating into f32) */
__device__ __forceinline__ void rowio_store_old(const RowIo &io, int64_t r, int64_t k, float v, float old) {
  const int64_t o = r * io.ld_dst + k;
  if (!io.dst_bf16) {
    reinterpret_cast<float *>(io.dst)[o] = io.accumulate ? __fadd_rn(old, v) : v;
    return;
  }
  const __nv_bfloat16 h = __float2bfloat16_rn(v);
  reinterpret_cast<__nv_bfloat16 *>(io.dst)[o] = h;
  if (io.dst_lo) reinterpret_cast<__nv_bfloat16 *>(io.dst_lo)[o] = __float2bfloat16_rn(v - __bfloat162float(h));
}

/* the value an accumulating f32 store adds to (0 when it does not accumulate) */
__device__ __forceinline__ float rowio_old(const RowIo &io, int64_t r, int64_t k) {
  return io.accumulate && !io.dst_bf16 ? reinterpret_cast<const float *>(io.dst)[r * io.ld_dst + k] : 0.f;
}

__device__ __forceinline__ void rowio_store(const RowIo &io, int64_t r, int64_t k, float v) {
  rowio_store_old(io, r, k, v, rowio_old(io, r, k));
}

struct HrOp {
  RowIo io;
  const float *fac; /* the Kronecker blocks' S (Sᵀ for Hᵀ), P x P on the device, or NULL */
  HrPlan pl;
};

/* Shared-memory word of position k: one pad word per 32. */
__host__ __device__ inline int hr_pos(int k) { return k + (k >> 5); }
__host__ __device__ inline size_t hr_smem_bytes(int n) { return sizeof(float) * (size_t)(n + (n >> 5) + 1); }
/* hr_kernel's dynamic shared memory: the row, then (Kronecker order P > 0) its n input values staged */
static inline size_t hr_kernel_smem_bytes(int n, int P) { return hr_smem_bytes(n) + (P ? sizeof(float) * (size_t)n : 0); }

/* The CPU's normalisation of a block, bit for bit. */
static inline float hr_block_scale(int64_t len) { return (float)(1.0 / sqrt((double)len)); }

/* Loads in flight per thread in the row kernels' load and store loops (HR_U values a batch). A loop that loads,
 * computes and stores one value an iteration waits for a memory round trip each time (the gate's division has a
 * branch, and a store may alias the next loads): a 576 = 36 x 16 row cost ~70 round trips that way. */
enum { HR_U = 8 };

/* The input value of one position as the transform reads it, from the loaded s = src[k], g = gate[k] (when gated),
 * w = norm_w[k], p = pre[k] (1 without pre); rs: the row's RMSNorm scale (hr_row_scale). */
__device__ __forceinline__ float hr_in_val(const RowIo &io, bool gated, float s, float g, float w, float p, float rs) {
  float v = s;
  if (gated) v = glq_silu_mul(g, v);
  if (io.norm_w) v = glq_rms_apply(v, rs, w);
  return v * p;
}

/* put(i, value of position pos(i)) for i = threadIdx.x, + NT, ... < count, U at a time with every load of a batch
 * issued before any value is formed. src and gate point at the row; positions >= n_src read as 0. */
template <int NT, int U = HR_U, class Pos, class Put>
__device__ __forceinline__ void hr_in_each(const RowIo &io, const float *src, const float *gate, float rs, int count, Pos pos, Put put) {
  for (int i0 = threadIdx.x; i0 < count; i0 += U * NT) {
    int64_t k[U];
    float s[U], g[U], w[U], p[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = i0 + u * NT;
      k[u] = i < count ? pos(i) : io.n_src;
      const bool ok = k[u] < io.n_src;
      s[u] = ok ? src[k[u]] : 0.f;
      g[u] = ok && gate ? gate[k[u]] : 0.f;
      w[u] = ok && io.norm_w ? io.norm_w[k[u]] : 0.f;
      p[u] = ok && io.pre ? io.pre[k[u]] : 1.f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i0 + u * NT < count) put(i0 + u * NT, k[u] < io.n_src ? hr_in_val(io, gate != NULL, s[u], g[u], w[u], p[u], rs) : 0.f);
  }
}

/* The row's RMSNorm scale when io.norm_w is set (every thread of the CTA calls it, after glq_grid_wait), else 0. */
template <int NT>
__device__ __forceinline__ float hr_row_scale(const HrOp &o, const float *src, double *red) {
  return o.io.norm_w ? glq_rms_scale<NT>(src, o.io.n_src, o.io.norm_eps, red) : 0.f;
}

/* dst of positions k[u] < n_dst of row r from the transformed values v[u] of a block with normalisation scale:
 * v · scale · post + bias (stored, or added), the loads of all U positions first. */
template <int U>
__device__ __forceinline__ void hr_store_n(const HrOp &o, int64_t r, const int64_t (&k)[U], const float (&v)[U], float scale) {
  float po[U], bi[U], old[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const bool ok = k[u] < o.io.n_dst;
    po[u] = ok && o.io.post ? o.io.post[k[u]] : 1.f;
    bi[u] = ok && o.io.bias ? o.io.bias[k[u]] : 0.f;
    old[u] = ok ? rowio_old(o.io, r, k[u]) : 0.f;
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    if (k[u] >= o.io.n_dst) continue;
    float x = v[u] * scale;
    if (o.io.post) x *= po[u];
    if (o.io.bias) x += bi[u];
    rowio_store_old(o.io, r, k[u], x, old[u]);
  }
}

/* hr_store_n over i = threadIdx.x, + NT, ... < count: position pos(i), transformed value val(i) */
template <int NT, int U = HR_U, class Pos, class Val>
__device__ __forceinline__ void hr_store_each(const HrOp &o, int64_t r, int count, float scale, Pos pos, Val val) {
  for (int i0 = threadIdx.x; i0 < count; i0 += U * NT) {
    int64_t k[U];
    float v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = i0 + u * NT;
      k[u] = i < count ? pos(i) : o.io.n_dst;
      v[u] = i < count ? val(i) : 0.f;
    }
    hr_store_n<U>(o, r, k, v, scale);
  }
}

/* Rows 4g .. 4g+3 of the factor (fac: S or Sᵀ, P x P row-major in shared memory) times the column x,
 * into shared memory at col + row*L. The lanes of a warp read at most two factor rows' words per step
 * (broadcasts from two banks). */
template <int P>
__device__ __forceinline__ void hr_kron_rows(int g, const float (&x)[P], const float *fac, float *sm, int col, int lg) {
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int j = 0; j < P; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] = fmaf(fac[(4 * g + i) * P + j], x[j], acc[i]);
#pragma unroll
  for (int i = 0; i < 4; ++i) sm[hr_pos(col + ((4 * g + i) << lg))] = acc[i];
}

/* A Kronecker block through (S (x) I), from its input values staged in shared memory (stage[b.off + i], loaded by
 * hr_in_each): a thread holds column a (P registers) and computes row groups j, j + per_col, ... of it, so that
 * blocks of few columns (576 = 36*16) still fill the CTA. */
template <int P>
__device__ __forceinline__ void hr_kron_block(const HrBlock &b, const float *stage, const float *fac, float *sm) {
  if constexpr (P > 0) {
    constexpr int groups = P / 4;
    const int L = 1 << b.lg, per_col = min(max(HR_THREADS >> b.lg, 1), groups);
    for (int w = threadIdx.x; w < L * per_col; w += HR_THREADS) {
      const int a = w & (L - 1);
      float x[P];
#pragma unroll
      for (int j = 0; j < P; ++j) x[j] = stage[b.off + (j << b.lg) + a];
      for (int g = w >> b.lg; g < groups; g += per_col) hr_kron_rows<P>(g, x, fac, sm, b.off + a, b.lg);
    }
  }
}

/* The butterfly stages of V = 2^R values, index bit 0 first: (a + c, a - c). */
template <int V>
__device__ __forceinline__ void hr_butterflies(float (&v)[V]) {
#pragma unroll
  for (int h = 1; h < V; h <<= 1)
#pragma unroll
    for (int m = 0; m < V; ++m)
      if (!(m & h)) {
        const float a = v[m], c = v[m + h];
        v[m] = a + c;
        v[m + h] = a - c;
      }
}

/* One FWHT pass over index bits j0 .. j0+R-1 of the chunks of [off, off + len): line u holds the 2^R
 * positions off + (u >> j0) * 2^(j0+R) + (u mod 2^j0) + m * 2^j0. */
template <int R, int NT = HR_THREADS>
__device__ __forceinline__ void hr_pass(float *sm, int off, int len, int j0) {
  constexpr int V = 1 << R;
  const int lo = (1 << j0) - 1;
  for (int u = threadIdx.x; u < len >> R; u += NT) {
    const int base = off + ((u >> j0) << (j0 + R)) + (u & lo);
    float v[V];
#pragma unroll
    for (int m = 0; m < V; ++m) v[m] = sm[hr_pos(base + (m << j0))];
    hr_butterflies<V>(v);
#pragma unroll
    for (int m = 0; m < V; ++m) sm[hr_pos(base + (m << j0))] = v[m];
  }
}

/* hr_pass over `bits` (1 .. HR_PASS_LOG, else nothing) index bits from j0 on */
template <int NT = HR_THREADS>
__device__ __forceinline__ void hr_pass_bits(float *sm, int off, int len, int j0, int bits) {
  switch (bits) {
    case 1: hr_pass<1, NT>(sm, off, len, j0); break;
    case 2: hr_pass<2, NT>(sm, off, len, j0); break;
    case 3: hr_pass<3, NT>(sm, off, len, j0); break;
    case 4: hr_pass<4, NT>(sm, off, len, j0); break;
    case 5: hr_pass<5, NT>(sm, off, len, j0); break;
    default: break;
  }
}

/* Row blockIdx.x of o. P: order of the Kronecker blocks (0: none), whose factor o.fac is copied to
 * shared memory first. */
template <int P>
__global__ void __launch_bounds__(HR_THREADS) hr_kernel(const HrOp o) {
  extern __shared__ float hr_sm[];
  __shared__ float fac[P > 0 ? P * P : 1];
  __shared__ double red[GLQ_RMS_RED];
  float *sm = hr_sm;
  const int64_t r = blockIdx.x;
  const float *src = o.io.src + r * o.io.ld_src, *gate = o.io.gate ? o.io.gate + r * o.io.ld_src : NULL;
  if constexpr (P > 0) { /* (the factor is a constant: read before the wait) */
    for (int i = threadIdx.x; i < P * P; i += HR_THREADS) fac[i] = o.fac[i];
    __syncthreads();
  }
  glq_grid_wait();
  glq_grid_release();
  const float rs = hr_row_scale<HR_THREADS>(o, src, red);
  float *stage = sm + hr_smem_bytes(o.pl.n) / sizeof(float); /* (P > 0 only) */
  for (int i = 0; i < o.pl.nblocks; ++i) { /* Kronecker blocks' inputs to the stage, plain blocks' to the row */
    const HrBlock &b = o.pl.b[i];
    if (P > 0 && b.kron)
      hr_in_each<HR_THREADS>(o.io, src, gate, rs, b.len, [&](int j) { return b.off + j; }, [&](int j, float v) { stage[b.off + j] = v; });
    else
      hr_in_each<HR_THREADS>(o.io, src, gate, rs, b.len, [&](int j) { return b.off + j; }, [&](int j, float v) { sm[hr_pos(b.off + j)] = v; });
  }
  if constexpr (P > 0) {
    __syncthreads();
    for (int i = 0; i < o.pl.nblocks; ++i)
      if (o.pl.b[i].kron) hr_kron_block<P>(o.pl.b[i], stage, fac, sm);
  }
  for (int j0 = 0;; j0 += HR_PASS_LOG) { /* a pass over every block with index bits at j0 or above */
    __syncthreads();
    int more = 0;
    for (int i = 0; i < o.pl.nblocks; ++i) {
      const HrBlock &b = o.pl.b[i];
      const int bits = min(b.lg - j0, (int)HR_PASS_LOG);
      more |= bits > 0;
      hr_pass_bits(sm, b.off, b.len, j0, bits);
    }
    if (!more) break;
  }
  for (int i = 0; i < o.pl.nblocks; ++i) {
    const HrBlock &b = o.pl.b[i];
    const int count = (int)max((int64_t)0, min((int64_t)b.len, o.io.n_dst - b.off));
    hr_store_each<HR_THREADS>(o, r, count, b.scale, [&](int j) { return (int64_t)b.off + j; }, [&](int j) { return sm[hr_pos(b.off + j)]; });
  }
}

/* ---- A row over a cluster of CTAs (sm_90), for batch sizes where one CTA per row leaves the GPU idle ----
 *
 * A row kernel CTA is a latency chain on one multiprocessor (docs/cuda-notes.md: 9 µs for 4096, 30 µs for
 * 14336 = 28*512 at batch 1). hrc_kernel spreads one row over HRC_CTAS CTAs of a thread-block cluster that
 * exchange values once through distributed shared memory. Plans of one block covering the row only:
 *  - plain FWHT of L = 2^lg: CTA c loads positions [cS, cS + S), S = L / HRC_CTAS, and runs the butterfly
 *    stages of index bits 0 .. lg-4 on them; after the cluster barrier, CTA c takes the low indices
 *    m in [cS/8, (c+1)S/8) and, for each, the 8 values m + hS of the 8 CTAs' memories, runs the stages of
 *    bits lg-3 .. lg-1 (h's bits, low first) and stores them;
 *  - S (x) H_L (order P): CTA c takes the columns a in [cW, cW + W), W = L / HRC_CTAS, of all P rows and
 *    applies S to them (staged first, as in hr_kernel); after the barrier, CTA c gathers the whole rows
 *    b = c, c + 8, ... from the 8 memories and runs the FWHT of each (bits 0 .. lg-1) before storing.
 * Each value goes through the same operations in the same order as in hr_kernel (the S terms' FMA chain in
 * j order, butterfly stages in bit order, (a + c, a - c)), so the two kernels give identical bytes
 * (linear_check compares them). */
enum { HRC_CTAS = 8, HRC_THREADS = 256, HRC_PASS_LOG = 3, HRC_GATHER = 8 };

/* Butterfly stages of index bits j_from .. j_to-1 over [0, len) in passes of up to HRC_PASS_LOG bits,
 * a CTA barrier before each pass. */
__device__ __forceinline__ void hrc_stages(float *sm, int len, int j_from, int j_to) {
  for (int j0 = j_from; j0 < j_to; j0 += HRC_PASS_LOG) {
    __syncthreads();
    switch (min(j_to - j0, (int)HRC_PASS_LOG)) {
      case 1: hr_pass<1, HRC_THREADS>(sm, 0, len, j0); break;
      case 2: hr_pass<2, HRC_THREADS>(sm, 0, len, j0); break;
      default: hr_pass<3, HRC_THREADS>(sm, 0, len, j0); break;
    }
  }
}

/* The launch of hrc_kernel for `rows` rows: clusters of HRC_CTAS CTAs along x (attr: room for two attributes; the
 * caller may add one after the first). */
static inline cudaLaunchConfig_t hrc_config(int64_t rows, size_t smem, cudaLaunchAttribute (&attr)[2]) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(rows * HRC_CTAS));
  cfg.blockDim = dim3(HRC_THREADS);
  cfg.dynamicSmemBytes = smem;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = HRC_CTAS;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

/* Shared memory of hrc_kernel for plan pl (P: its Kronecker order, 0: none). */
static inline size_t hrc_smem_bytes(const HrPlan &pl, int P) {
  const int L = 1 << pl.b[0].lg;
  if (!P) return hr_smem_bytes(L / HRC_CTAS);
  /* the CTA's columns after S, the rows it gathers, its columns' inputs staged */
  return hr_smem_bytes(P * (L / HRC_CTAS)) + hr_smem_bytes((P + HRC_CTAS - 1) / HRC_CTAS * L) + sizeof(float) * P * (L / HRC_CTAS);
}

/* Row blockIdx.x / HRC_CTAS of o; launched with clusters of HRC_CTAS CTAs along x. */
template <int P>
__global__ void __launch_bounds__(HRC_THREADS) hrc_kernel(const HrOp o) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  extern __shared__ float hrc_sm[];
  __shared__ float fac[P > 0 ? P * P : 1];
  __shared__ double red[GLQ_RMS_RED];
  cg::cluster_group cl = cg::this_cluster();
  const int c = (int)cl.block_rank(), lg = o.pl.b[0].lg, L = 1 << lg;
  const int64_t r = blockIdx.x / HRC_CTAS;
  const float *src = o.io.src + r * o.io.ld_src, *gate = o.io.gate ? o.io.gate + r * o.io.ld_src : NULL;
  if constexpr (P > 0) {
    for (int i = threadIdx.x; i < P * P; i += HRC_THREADS) fac[i] = o.fac[i];
    __syncthreads();
  }
  glq_grid_wait();
  glq_grid_release();
  const float rs = hr_row_scale<HRC_THREADS>(o, src, red); /* each CTA of the cluster sums the whole row */
  if constexpr (P == 0) {
    const int lgS = lg - 3, S = 1 << lgS, M = S >> 3;
    hr_in_each<HRC_THREADS>(o.io, src, gate, rs, S, [&](int i) { return c * S + i; }, [&](int i, float v) { hrc_sm[hr_pos(i)] = v; });
    hrc_stages(hrc_sm, S, 0, lgS);
    cl.sync();
    for (int m = c * M + threadIdx.x; m < (c + 1) * M; m += HRC_THREADS) {
      float v[HRC_CTAS];
#pragma unroll
      for (int h = 0; h < HRC_CTAS; ++h) v[h] = cl.map_shared_rank(hrc_sm, h)[hr_pos(m)];
      hr_butterflies<HRC_CTAS>(v);
      int64_t k[HRC_CTAS];
#pragma unroll
      for (int h = 0; h < HRC_CTAS; ++h) k[h] = h * S + m;
      hr_store_n<HRC_CTAS>(o, r, k, v, o.pl.b[0].scale);
    }
    cl.sync(); /* no CTA leaves while another reads its memory */
  } else {
    const int lgW = lg - 3, W = 1 << lgW, groups = P / 4;
    float *cols = hrc_sm, *rows = hrc_sm + hr_pos(P * W) + 1;
    float *stage = rows + hr_smem_bytes(((P + HRC_CTAS - 1) / HRC_CTAS) << lg) / sizeof(float); /* stage[j W + a] */
    hr_in_each<HRC_THREADS>(o.io, src, gate, rs, P * W, [&](int i) { return ((i >> lgW) << lg) + c * W + (i & (W - 1)); },
                            [&](int i, float v) { stage[i] = v; });
    __syncthreads();
    const int per_col = min(max(HRC_THREADS >> lgW, 1), groups);
    for (int w = threadIdx.x; w < W * per_col; w += HRC_THREADS) {
      const int a = w & (W - 1);
      float x[P];
#pragma unroll
      for (int j = 0; j < P; ++j) x[j] = stage[(j << lgW) + a];
      for (int g = w >> lgW; g < groups; g += per_col) hr_kron_rows<P>(g, x, fac, cols, a, lgW);
    }
    cl.sync();
    const int nq = (P - c + HRC_CTAS - 1) / HRC_CTAS, n = nq << lg; /* rows c, c + 8, ... */
    for (int i0 = threadIdx.x; i0 < n; i0 += HRC_GATHER * HRC_THREADS) { /* HRC_GATHER remote loads in flight */
      float v[HRC_GATHER];
#pragma unroll
      for (int u = 0; u < HRC_GATHER; ++u) {
        const int i = i0 + u * HRC_THREADS, q = i >> lg, a = i & (L - 1), b = c + q * HRC_CTAS;
        v[u] = i < n ? cl.map_shared_rank(cols, a >> lgW)[hr_pos((b << lgW) + (a & (W - 1)))] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < HRC_GATHER; ++u)
        if (i0 + u * HRC_THREADS < n) rows[hr_pos(i0 + u * HRC_THREADS)] = v[u];
    }
    cl.sync(); /* the gathers are done: every CTA's cols may go */
    hrc_stages(rows, nq << lg, 0, lg);
    __syncthreads();
    hr_store_each<HRC_THREADS>(o, r, nq << lg, o.pl.b[0].scale, [&](int i) { return (int64_t)(((c + (i >> lg) * HRC_CTAS) << lg) + (i & (L - 1))); },
                               [&](int i) { return rows[hr_pos(i)]; });
  }
#endif
}

/* Whether plan pl (Kronecker order P) has a cluster kernel: one block over the whole row, at least 2048
 * positions, chunks of at least 64 (8 CTAs of >= 8 columns; for a plain FWHT S >= 256 so that each CTA owns
 * S / 8 >= 32 low indices). */
static inline int hrc_fits(const HrPlan &pl, int P) {
  if (pl.nblocks != 1 || pl.b[0].off != 0 || pl.b[0].len != pl.n || pl.n < 2048) return 0;
  const int lg = pl.b[0].lg;
  if ((pl.b[0].kron != 0) != (P > 0)) return 0;
  return P ? lg >= 6 && (P << lg) == pl.n : lg >= 11 && (1 << lg) == pl.n;
}

/* The row plan of h (transpose: of Hᵀ): 1, with *p the order of its Kronecker blocks (0: none) and *s
 * their S (Sᵀ) on the host, or 0 when the kernel cannot run it (more than HR_MAX_BLOCKS blocks, Kronecker blocks
 * of different orders). */
static inline int hr_plan_of(const glq_hadamard *h, int transpose, HrPlan *pl, int *p, const float **s) {
  const int nb = glq_hadamard_nblocks(h);
  const int64_t n = glq_hadamard_dim(h);
  *p = 0;
  *s = NULL;
  if (nb > HR_MAX_BLOCKS || n > (1 << 24)) return 0;
  memset(pl, 0, sizeof *pl);
  pl->n = (int)n;
  pl->nblocks = nb;
  for (int i = 0; i < nb; ++i) {
    glq_hadamard_block hb;
    glq_hadamard_block_at(h, i, &hb);
    if (hb.L < 1 || (hb.L & (hb.L - 1))) return 0;
    if (hb.p > 1) {
      const float *f = transpose ? hb.st : hb.s;
      if (*p && (hb.p != *p || f != *s)) return 0;
      *p = hb.p;
      *s = f;
    }
    HrBlock *b = &pl->b[i];
    b->off = (int)hb.off;
    b->len = (int)hb.len;
    while ((1ll << b->lg) < hb.L) b->lg++;
    b->kron = hb.p > 1;
    b->scale = hr_block_scale(hb.len);
  }
  return 1;
}

#endif
