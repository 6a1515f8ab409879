/* fused_mma.cuh - the fused "decode in registers, multiply on tensor cores" kernel shared by the
 * E8 and HiF4 formats (internal). y (B x out, f32) = scale * x (B x in, bf16) . W^T.
 *
 * Layout of the work (docs/cuda-notes.md has the derivation):
 *  - A CTA of WARPS warps owns a tile of 16*R weight rows x 8*NT batch columns and loops over such
 *    tiles (persistent grid). Its warps split the K dimension of the tile; their partial sums are
 *    added in shared memory in a fixed warp order (deterministic, no atomics).
 *  - A K step is 256 inputs; lane (g = lane/4, t = lane%4) owns inputs [64t, 64t+64) of the step
 *    for weight rows g and g+8 of each 16-row part of the tile, i.e. one 64-input unit per row:
 *    8 E8 groups, or exactly one HiF4 block.
 *  - Chunk i of a step (i = 0..7) feeds two m16n8k16 mma's. The K order inside an mma is permuted
 *    (a dot product does not care): mma h of chunk i gives lane t the inputs 64t + 8i + 4h + {0..3},
 *    so the A fragment of a lane is 4 consecutive weights of its own group, and its B fragment is
 *    2 words of one 16-byte load x[n][64t + 8i .. +8]. No shuffles, no shared-memory staging.
 * A format policy F supplies:
 *   F::Raw                       registers holding one step's packed weights of rows g, g+8 of a lane
 *   F::kStages (1 or 2)          number of accumulators (E8 3/4-bit keep stage 2 apart, exactly)
 *   F::kTable                    whether a codebook head is copied into shared memory
 *   F::kPrefetch (1 or 2)        K steps whose weights are loaded ahead of the one computed
 *   F::load(p, row0, s, g, t, r) issue the global loads of step s of rows row0+g, row0+g+8
 *   F::decode(p, r, i, half, stab, e[kStages][4])
 *                                bf16 pairs (weights 2q, 2q+1 of chunk i, q = 0..3) of row
 *                                row0 + g + 8half, one set per stage. */
#ifndef GLQ_CUDA_FUSED_MMA_CUH
#define GLQ_CUDA_FUSED_MMA_CUH
#include "common.cuh"

struct FusedParams {
  const uint16_t *x;      /* B x in bf16, row-major (ld = in) */
  void *y;                /* B x out, row-major (ld = out): f32, or bf16 if y_bf16 */
  int y_bf16;
  int B, out, in;
  int steps;              /* K steps of 256 (the weight planes are padded to this) */
  int row_tiles;          /* padded rows / (16*R) */
  int col_blocks;         /* ceil(B / (8*NT)) */
  const uint8_t *w1, *w2; /* packed weight planes (format-specific) */
  int64_t pitch1, pitch2; /* bytes per padded row of w1, w2 */
  const uint32_t *table;  /* E8: 65536 nibble words (global) */
  int n_smem;             /* E8: leading table words copied to shared memory (multiple of 4) */
  float scale, scale2;    /* y = scale * (acc1 + scale2 * acc2) */
};

enum { FUSED_RED_FLOATS = 2048 }; /* WARPS * R * 128 partial sums */

__device__ __forceinline__ uint32_t u4get(const uint4 &v, int c) {
  return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

/* One K step of R 16-row halves x NT 8-column tiles; x is loaded XC chunks at a time. */
template <class F, int NT, int R>
__device__ __forceinline__ void fused_step(const FusedParams &p, const typename F::Raw (&raw)[R], int s,
                                           int cb, int g, int t, const uint32_t *stab,
                                           float (&acc)[F::kStages][R][NT][4]) {
  constexpr int XC = 8 / NT;
  const int kbase = s * 256 + 64 * t;
#pragma unroll
  for (int i0 = 0; i0 < 8; i0 += XC) {
    uint4 xq[XC][NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int n = cb * 8 * NT + 8 * nt + g;
      const bool ok = n < p.B;
      const uint16_t *xr = p.x + (int64_t)(ok ? n : 0) * p.in;
#pragma unroll
      for (int i = 0; i < XC; ++i) {
        const int k = kbase + 8 * (i0 + i);
        xq[i][nt] = (ok && k < p.in) ? __ldg(reinterpret_cast<const uint4 *>(xr + k)) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int i = 0; i < XC; ++i) {
#pragma unroll
      for (int rr = 0; rr < R; ++rr) {
        uint32_t eg[F::kStages][4], eh[F::kStages][4];
        F::decode(p, raw[rr], i0 + i, 0, stab, eg);
        F::decode(p, raw[rr], i0 + i, 1, stab, eh);
#pragma unroll
        for (int st = 0; st < F::kStages; ++st)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
              mma_bf16_16816(acc[st][rr][nt], eg[st][2 * h], eh[st][2 * h], eg[st][2 * h + 1],
                             eh[st][2 * h + 1], u4get(xq[i][nt], 2 * h), u4get(xq[i][nt], 2 * h + 1));
      }
    }
  }
}

template <class F, int R>
__device__ __forceinline__ void fused_load(const FusedParams &p, int tile, int s, int g, int t, typename F::Raw (&r)[R]) {
  const int row0 = (tile / p.col_blocks) * 16 * R;
#pragma unroll
  for (int rr = 0; rr < R; ++rr) F::load(p, row0 + 16 * rr, s, g, t, r[rr]);
}

template <class F, int NT, int R, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, 1) fused_kernel(const FusedParams p) {
  extern __shared__ __align__(16) uint32_t smem[];
  float *red = reinterpret_cast<float *>(smem);
  uint32_t *stab = smem + FUSED_RED_FLOATS;
  constexpr int PF = F::kPrefetch; /* steps loaded ahead: 1 or 2 */
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int ntiles = p.row_tiles * p.col_blocks;
  const int stride = gridDim.x;
  int tile = blockIdx.x;
  if (tile >= ntiles) return;

  if (F::kTable) { /* codebook head -> shared memory, overlapped with the first weight loads */
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(stab);
    for (int c = threadIdx.x; c < p.n_smem / 4; c += WARPS * 32)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sbase + 16u * c), "l"(p.table + 4 * c));
    asm volatile("cp.async.commit_group;");
  }
  const int sbeg = w * p.steps / WARPS, send = (w + 1) * p.steps / WARPS;
  /* the warp's sequence of (tile, step) positions; adv gives the next one */
  auto adv = [&](int &tl, int &st) { if (++st >= send) { st = sbeg; tl += stride; } };
  typename F::Raw b0[R] = {}, b1[R] = {}, b2[R] = {};
  if (sbeg < send) {
    fused_load<F, R>(p, tile, sbeg, g, t, b0);
    if (PF == 2) {
      int tl = tile, st = sbeg;
      adv(tl, st);
      if (tl < ntiles) fused_load<F, R>(p, tl, st, g, t, b1);
    }
  }
  if (F::kTable) asm volatile("cp.async.wait_all;");
  __syncthreads();

  for (; tile < ntiles; tile += stride) {
    const int row0 = (tile / p.col_blocks) * 16 * R, cb = tile % p.col_blocks;
    float acc[F::kStages][R][NT][4];
#pragma unroll
    for (int st = 0; st < F::kStages; ++st)
#pragma unroll
      for (int rr = 0; rr < R; ++rr)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[st][rr][nt][j] = 0.f;

    for (int s = sbeg; s < send; ++s) {
      int tl = tile, st = s;
      adv(tl, st);
      if (PF == 2) adv(tl, st);
      if (tl < ntiles) fused_load<F, R>(p, tl, st, g, t, PF == 2 ? b2 : b1);
      fused_step<F, NT, R>(p, b0, s, cb, g, t, stab, acc);
#pragma unroll
      for (int rr = 0; rr < R; ++rr) {
        b0[rr] = b1[rr];
        if (PF == 2) b1[rr] = b2[rr];
      }
    }

#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int rr = 0; rr < R; ++rr) {
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          v[j] = acc[0][rr][nt][j];
          if (F::kStages == 2) v[j] = fmaf(p.scale2, acc[F::kStages - 1][rr][nt][j], v[j]);
        }
        *reinterpret_cast<float4 *>(red + (w * R + rr) * 128 + lane * 4) = make_float4(v[0], v[1], v[2], v[3]);
      }
      __syncthreads();
      if (threadIdx.x < R * 128) {
        const int tid = threadIdx.x;
        const int rr = tid >> 7, ln = (tid >> 2) & 31, j = tid & 3;
        float v = 0.f;
#pragma unroll
        for (int ww = 0; ww < WARPS; ++ww) v += red[(ww * R + rr) * 128 + (tid & 127)];
        const int row = row0 + 16 * rr + (ln >> 2) + 8 * (j >> 1);
        const int n = cb * 8 * NT + 8 * nt + 2 * (ln & 3) + (j & 1);
        if (row < p.out && n < p.B) {
          const int64_t o = (int64_t)n * p.out + row;
          if (p.y_bf16) reinterpret_cast<__nv_bfloat16 *>(p.y)[o] = __float2bfloat16_rn(p.scale * v);
          else reinterpret_cast<float *>(p.y)[o] = p.scale * v;
        }
      }
      __syncthreads();
    }
  }
}

/* Tile shapes: cfg 0 = 16 rows per warp, 16 warps (more warps in flight; for B <= 8);
 * cfg 1 = 32 rows per warp, 8 warps (x fragments reused over twice the rows; for B > 8). */
template <class F, int NT, int R, int WARPS>
static int fused_launch_cfg(const glq_cuda_ctx *ctx, FusedParams p, cudaStream_t st) {
  p.col_blocks = (p.B + 8 * NT - 1) / (8 * NT);
  p.row_tiles = (p.out + 16 * R - 1) / (16 * R);
  const size_t smem = sizeof(float) * FUSED_RED_FLOATS + (F::kTable ? sizeof(uint32_t) * p.n_smem : 0);
  void (*kern)(const FusedParams) = fused_kernel<F, NT, R, WARPS>;
  GLQ_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  int occ = 0;
  GLQ_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, WARPS * 32, smem));
  if (occ < 1) return glq_error(GLQ_EUNSUPPORTED, "fused kernel: no resident CTA with %zu B of shared memory", smem);
  const int64_t ntiles = (int64_t)p.row_tiles * p.col_blocks;
  const int grid = (int)(ntiles < (int64_t)ctx->sms * occ ? ntiles : (int64_t)ctx->sms * occ);
  kern<<<grid, WARPS * 32, smem, st>>>(p);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

template <class F>
static int fused_launch(const glq_cuda_ctx *ctx, const FusedParams &p, cudaStream_t st) {
  const int nt1 = p.B <= 8;
  const int cfg = ctx->fused_cfg >= 0 ? ctx->fused_cfg : nt1 ? 0 : 1;
  if (nt1) return cfg == 0 ? fused_launch_cfg<F, 1, 1, 16>(ctx, p, st) : fused_launch_cfg<F, 1, 2, 8>(ctx, p, st);
  return cfg == 0 ? fused_launch_cfg<F, 2, 1, 16>(ctx, p, st) : fused_launch_cfg<F, 2, 2, 8>(ctx, p, st);
}

#endif
