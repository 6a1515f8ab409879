/* fused_mma.cuh - the fused "decode in registers, multiply on tensor cores" kernel shared by the
 * E8 and HiF4 formats (internal). y (B x out, f32 or bf16) = scale * x (B x in, bf16) . W^T.
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
 *   F::kBias                     0, or a bf16 pair b: unpack returns weight + b (cheaper), and the
 *                                kernel subtracts b * sum(x) with one extra mma per chunk
 *   F::load(p, row0, s, g, t, r) issue the global loads of step s of rows row0+g, row0+g+8
 *   F::gather(p, r, i, half, stab, wd[kStages])
 *                                the loads chunk i of row row0 + g + 8half needs (E8: codebook words)
 *   optional: F::Word            the type of a gathered value (default uint32_t; E8P: uint4, a table row)
 *   optional: F::kGather         chunks gathered before any is unpacked (default 4, or 2 for R·kStages >= 4)
 *   optional: F::kSmallTable     true: the table is small enough for two CTAs per multiprocessor (cfg 2)
 *   F::unpack(p, r, i, half, wd, e[kStages][4])
 *                                bf16 pairs (weights 2q, 2q+1 of chunk i, q = 0..3) of that row,
 *                                one set per stage.
 * Split inputs (XLO, p.xlo != NULL): x = xhi + xlo, two bf16 rows per batch row (glq_cuda_ctx_set_split_inputs);
 * every mma of x runs again on the lo words (they are loaded chunk by chunk, beside the hi ones) into the same
 * accumulator, right after the hi one: the product is then f32-faithful in x, at twice the mma's. */
#ifndef GLQ_CUDA_FUSED_MMA_CUH
#define GLQ_CUDA_FUSED_MMA_CUH
#include <type_traits>
#include "common.cuh"
#include "hadamard_rows.cuh"

/* The input transform in the prologue (docs/cuda-notes.md, "Plan: the input transform in the fused kernel's
 * prologue"): with rot.io.src set, every CTA builds x (and x_lo) itself in shared memory from the f32 rows io.src,
 * as the row kernel would store them: bf16 split of scale · FWHT_{2^lg}(the input values of hr_in_each), one plain block over the
 * whole row (in = 2^lg), B <= FUSED_ROT_B. Off unless glq_cuda_ctx_set_prologue. */
struct FusedRot {
  RowIo io;   /* src, ld_src, n_src, pre, gate, norm_w, norm_eps (the rest unused) */
  int lg;
  float scale;
};
enum { FUSED_ROT_B = 2 };
/* Staged inputs: at decode sizes every CTA reads all of x (its warps split K); read from global memory chunk by
 * chunk, each K step waited for its x (and x_lo) loads, a few L2 round trips a step. Batches up to FUSED_STAGE_B
 * whose x (+ x_lo) take at most FUSED_STAGE_BYTES are copied to shared memory once, with every copy in flight. */
enum { FUSED_STAGE_B = 2, FUSED_STAGE_BYTES = 64 * 1024 };

struct FusedParams {
  const uint16_t *x;      /* B x in bf16, row-major (ld = in) */
  const uint16_t *xlo;    /* NULL, or the bf16 remainders of x (same layout) */
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
  FusedRot rot;           /* rot.io.src != NULL: x and xlo are built in the prologue (then x, xlo unused) */
  int stage_x;            /* x and xlo copied to shared memory before the first step (fused_launch decides) */
};

/* shared memory of the staged x and x_lo of p */
static inline size_t fused_stage_bytes(const FusedParams &p) { return (size_t)2 * p.B * p.in * (p.xlo ? 2 : 1); }

enum { FUSED_RED_FLOATS = 2048 }; /* WARPS * R * 128 partial sums */

/* The parameters every format fills the same way (the rest: table, n_smem, scale2 for E8). */
static inline FusedParams fused_params(const uint16_t *x, const uint16_t *xlo, void *y, int y_bf16, int64_t B, int64_t out, int64_t in,
                                       int steps, const uint8_t *w1, const uint8_t *w2, int64_t pitch1, int64_t pitch2,
                                       float scale) {
  FusedParams p;
  memset(&p, 0, sizeof p);
  p.x = x;
  p.xlo = xlo;
  p.y = y;
  p.y_bf16 = y_bf16;
  p.B = (int)B;
  p.out = (int)out;
  p.in = (int)in;
  p.steps = steps;
  p.w1 = w1;
  p.w2 = w2;
  p.pitch1 = pitch1;
  p.pitch2 = pitch2;
  p.scale = scale;
  return p;
}

/* The optional members of a format policy, with their defaults (see the header comment). */
template <class F, class = void> struct FmtWord { typedef uint32_t type; };
template <class F> struct FmtWord<F, std::void_t<typename F::Word>> { typedef typename F::Word type; };
template <class F, int R, class = void> struct FmtGather { static constexpr int n = (R * F::kStages >= 4) ? 2 : 4; };
template <class F, int R> struct FmtGather<F, R, std::void_t<decltype(F::kGather)>> { static constexpr int n = F::kGather; };
template <class F, class = void> struct FmtSmallTable { static constexpr bool v = !F::kTable; };
template <class F> struct FmtSmallTable<F, std::void_t<decltype(F::kSmallTable)>> { static constexpr bool v = F::kSmallTable; };

__device__ __forceinline__ uint32_t u4get(const uint4 &v, int c) {
  return c == 0 ? v.x : c == 1 ? v.y : c == 2 ? v.z : v.w;
}

/* Accumulators per (stage, 16-row part, 8-column tile): two when NT == 1 (the two mma's of a chunk
 * go to different ones, so that consecutive mma's do not wait for each other). */
template <int NT> struct AccSplit { static constexpr int n = NT == 1 ? 2 : 1; };

/* One K step of R 16-row parts x NT 8-column tiles. x is loaded XC chunks at a time; codebook words
 * are gathered GA chunks at a time before any is unpacked, so that the latency of the gathers that
 * miss shared memory is paid once per GA chunks, not once per gather. */
/* 16 bytes of x: from shared memory (ROT: the prologue's copy) or through the read-only path */
template <bool ROT>
__device__ __forceinline__ uint4 x16(const uint16_t *a) {
  if constexpr (ROT) return *reinterpret_cast<const uint4 *>(a);
  else return __ldg(reinterpret_cast<const uint4 *>(a));
}

template <class F, int NT, int R, bool XLO, bool ROT = false>
__device__ __forceinline__ void fused_step(const FusedParams &p, const uint16_t *px, const uint16_t *pxlo,
                                           const typename F::Raw (&raw)[R], int s,
                                           int cb, int g, int t, const uint32_t *stab,
                                           float (&acc)[F::kStages][R][NT][AccSplit<NT>::n][4],
                                           float (&corr)[NT][AccSplit<NT>::n][4]) {
  constexpr int XC = 8 / NT, GA = FmtGather<F, R>::n;
  typedef typename FmtWord<F>::type Word;
  const int kbase = s * 256 + 64 * t;
#pragma unroll
  for (int i0 = 0; i0 < 8; i0 += XC) {
    uint4 xq[XC][NT];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int n = cb * 8 * NT + 8 * nt + g;
      const bool ok = n < p.B;
      const uint16_t *xr = px + (int64_t)(ok ? n : 0) * p.in;
#pragma unroll
      for (int i = 0; i < XC; ++i) {
        const int k = kbase + 8 * (i0 + i);
        xq[i][nt] = (ok && k < p.in) ? x16<ROT>(xr + k) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int ig = 0; ig < XC; ig += GA) {
      Word wd[GA][R][2][F::kStages];
#pragma unroll
      for (int i = 0; i < GA; ++i)
#pragma unroll
        for (int rr = 0; rr < R; ++rr)
#pragma unroll
          for (int h = 0; h < 2; ++h) F::gather(p, raw[rr], i0 + ig + i, h, stab, wd[i][rr][h]);
#pragma unroll
      for (int i = 0; i < GA; ++i) {
        uint4 xl[NT];
        if constexpr (XLO)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const int n = cb * 8 * NT + 8 * nt + g, k = kbase + 8 * (i0 + ig + i);
            xl[nt] = (n < p.B && k < p.in) ? x16<ROT>(pxlo + (int64_t)n * p.in + k) : make_uint4(0, 0, 0, 0);
          }
        if (F::kBias) /* every row of corr gets kBias * (sum of the chunk's x): the offset of unpack */
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              mma_bf16_16816(corr[nt][NT == 1 ? h : 0], F::kBias, F::kBias, F::kBias, F::kBias,
                             u4get(xq[ig + i][nt], 2 * h), u4get(xq[ig + i][nt], 2 * h + 1));
              if constexpr (XLO)
                mma_bf16_16816(corr[nt][NT == 1 ? h : 0], F::kBias, F::kBias, F::kBias, F::kBias, u4get(xl[nt], 2 * h),
                               u4get(xl[nt], 2 * h + 1));
            }
#pragma unroll
        for (int rr = 0; rr < R; ++rr) {
          uint32_t eg[F::kStages][4], eh[F::kStages][4];
          F::unpack(p, raw[rr], i0 + ig + i, 0, wd[i][rr][0], eg);
          F::unpack(p, raw[rr], i0 + ig + i, 1, wd[i][rr][1], eh);
#pragma unroll
          for (int st = 0; st < F::kStages; ++st)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
              for (int nt = 0; nt < NT; ++nt) {
                mma_bf16_16816(acc[st][rr][nt][NT == 1 ? h : 0], eg[st][2 * h], eh[st][2 * h], eg[st][2 * h + 1],
                               eh[st][2 * h + 1], u4get(xq[ig + i][nt], 2 * h), u4get(xq[ig + i][nt], 2 * h + 1));
                if constexpr (XLO)
                  mma_bf16_16816(acc[st][rr][nt][NT == 1 ? h : 0], eg[st][2 * h], eh[st][2 * h], eg[st][2 * h + 1],
                                 eh[st][2 * h + 1], u4get(xl[nt], 2 * h), u4get(xl[nt], 2 * h + 1));
              }
        }
      }
    }
  }
}

/* The index planes of an E8-style layer (glq_cuda_e8: E8 shell and E8P) as a lane's raw step: 8 u16 stage-1
 * indices per row g, g+8, and the stage-2 ones (S2: 0 none, 1 u8, 2 u16). */
template <int S2> struct E8Raw;
template <> struct E8Raw<0> { uint4 q1[2]; };
template <> struct E8Raw<1> { uint4 q1[2]; uint2 q2[2]; };
template <> struct E8Raw<2> { uint4 q1[2]; uint4 q2[2]; };
template <int S2>
__device__ __forceinline__ void e8_planes_load(const FusedParams &p, int row0, int s, int g, int t, E8Raw<S2> &r) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row0 + 8 * h + g, grp = (int64_t)s * 32 + 8 * t;
    r.q1[h] = ldg_stream16(p.w1 + row * p.pitch1 + grp * 2);
    if constexpr (S2 == 1) r.q2[h] = ldg_stream8(p.w2 + row * p.pitch2 + grp);
    if constexpr (S2 == 2) r.q2[h] = ldg_stream16(p.w2 + row * p.pitch2 + grp * 2);
  }
}

template <class F, int R>
__device__ __forceinline__ void fused_load(const FusedParams &p, int tile, int s, int g, int t, typename F::Raw (&r)[R]) {
  const int row0 = (tile / p.col_blocks) * 16 * R;
#pragma unroll
  for (int rr = 0; rr < R; ++rr) F::load(p, row0 + 16 * rr, s, g, t, r[rr]);
}

/* Copy the codebook head into shared memory (cp.async; the caller waits with cp.async.wait_all). */
template <class F, int THREADS>
__device__ __forceinline__ void fused_table_fill(const FusedParams &p, uint32_t *stab) {
  if (F::kTable) glq_cp_async16(stab, p.table, p.n_smem / 4, THREADS);
}

/* End of a tile: combine stages and the bias correction, add the WARPS partial sums in a fixed order
 * through shared memory, scale, store. All threads of the CTA take part (two barriers per nt). */
template <class F, int NT, int R, int WARPS, int AS>
__device__ __forceinline__ void fused_epilogue(const FusedParams &p, const float (&acc)[F::kStages][R][NT][AS][4],
                                               const float (&corr)[NT][AS][4], float *red, int row0, int cb) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int rr = 0; rr < R; ++rr) {
      float v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float a1 = acc[0][rr][nt][0][j], a2 = acc[F::kStages - 1][rr][nt][0][j], c = corr[nt][0][j];
        if (AS == 2) {
          a1 += acc[0][rr][nt][AS - 1][j];
          a2 += acc[F::kStages - 1][rr][nt][AS - 1][j];
          c += corr[nt][AS - 1][j];
        }
        if (F::kBias) {
          a1 -= c;
          a2 -= c;
        }
        v[j] = F::kStages == 2 ? fmaf(p.scale2, a2, a1) : a1;
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

/* Bytes of shared memory the prologue adds for in = n: the f32 work row (hr_pos layout), then B rows of bf16 hi and
 * of lo (after the reduction buffer and the table). */
static inline size_t fused_rot_bytes(int n, int B) { return (hr_smem_bytes(n) + 15) / 16 * 16 + (size_t)4 * B * n; }

/* Build x (xh) and its remainders (xl, or NULL) for the p.B rows in shared memory, as hr_kernel<0> stores them; every
 * thread of the CTA (NT) takes part. red: GLQ_RMS_RED doubles of scratch. */
template <int NT>
__device__ __forceinline__ void fused_rot_prologue(const FusedParams &p, float *work, uint16_t *xh, uint16_t *xl, double *red) {
  const RowIo &io = p.rot.io;
  const int n = p.in, lg = p.rot.lg;
  for (int b = 0; b < p.B; ++b) {
    const float *src = io.src + (int64_t)b * io.ld_src, *gate = io.gate ? io.gate + (int64_t)b * io.ld_src : NULL;
    const float rs = io.norm_w ? glq_rms_scale<NT>(src, io.n_src, io.norm_eps, red) : 0.f;
    hr_in_each<NT>(io, src, gate, rs, n, [](int k) { return k; }, [&](int k, float v) { work[hr_pos(k)] = v; });
    for (int j0 = 0; j0 < lg; j0 += HR_PASS_LOG) { /* hr_kernel's passes: the stages in bit order */
      __syncthreads();
      hr_pass_bits<NT>(work, 0, n, j0, min(lg - j0, (int)HR_PASS_LOG));
    }
    __syncthreads();
    for (int k = threadIdx.x; k < n; k += NT) { /* hr_store + rowio_store: v · scale, bf16 hi, bf16 of the rest */
      const float v = work[hr_pos(k)] * p.rot.scale;
      const __nv_bfloat16 h = __float2bfloat16_rn(v);
      xh[(int64_t)b * n + k] = __bfloat16_as_ushort(h);
      if (xl) xl[(int64_t)b * n + k] = __bfloat16_as_ushort(__float2bfloat16_rn(v - __bfloat162float(h)));
    }
    __syncthreads();
  }
}

template <class F, int NT, int R, int WARPS, int MINB = 1, bool XLO = false, bool ROT = false, bool STX = false>
__global__ void __launch_bounds__(WARPS * 32, MINB) fused_kernel(const FusedParams p) {
  static_assert(WARPS * R * 128 <= FUSED_RED_FLOATS, "partial sums exceed the reduction buffer");
  extern __shared__ __align__(16) uint32_t smem[];
  float *red = reinterpret_cast<float *>(smem);
  uint32_t *stab = smem + FUSED_RED_FLOATS;
  constexpr int PF = F::kPrefetch; /* steps loaded ahead: 1 or 2 */
  constexpr int AS = AccSplit<NT>::n;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int ntiles = p.row_tiles * p.col_blocks;
  const int stride = gridDim.x;
  int tile = blockIdx.x;
  if (tile >= ntiles) {
    glq_grid_wait(); /* (a CTA that exits at once needs no wait; kept for symmetry) */
    return;
  }
  fused_table_fill<F, WARPS * 32>(p, stab);
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
  /* the codebook head and the first weights are constants: loaded while the kernel before this one
   * (x's producer) finishes; x is read and y written only after it has */
  glq_grid_wait();
  glq_grid_release();
  const uint16_t *px = p.x, *pxlo = p.xlo;
  char *rb = reinterpret_cast<char *>(stab + (F::kTable ? p.n_smem + 4 : 0)); /* the prologue's or staged x's space */
  if constexpr (ROT) { /* x built here from the f32 rows (the reduction buffer is free until the first epilogue) */
    float *work = reinterpret_cast<float *>(rb);
    uint16_t *xh = reinterpret_cast<uint16_t *>(rb + (hr_smem_bytes(p.in) + 15) / 16 * 16), *xl = XLO ? xh + (int64_t)p.B * p.in : NULL;
    fused_rot_prologue<WARPS * 32>(p, work, xh, xl, reinterpret_cast<double *>(red));
    px = xh;
    pxlo = xl;
  }
  if constexpr (STX) { /* x (and x_lo) to shared memory, every 16-byte copy in flight at once */
    uint16_t *xh = reinterpret_cast<uint16_t *>(rb), *xl = XLO ? xh + (int64_t)p.B * p.in : NULL;
    glq_cp_async16(xh, p.x, p.B * p.in / 8, WARPS * 32);
    if constexpr (XLO) glq_cp_async16(xl, p.xlo, p.B * p.in / 8, WARPS * 32);
    asm volatile("cp.async.wait_all;");
    __syncthreads();
    px = xh;
    pxlo = xl;
  }

  for (; tile < ntiles; tile += stride) {
    const int row0 = (tile / p.col_blocks) * 16 * R, cb = tile % p.col_blocks;
    float acc[F::kStages][R][NT][AS][4] = {};
    float corr[NT][AS][4] = {};
    for (int s = sbeg; s < send; ++s) {
      int tl = tile, st = s;
      adv(tl, st);
      if (PF == 2) adv(tl, st);
      if (tl < ntiles) fused_load<F, R>(p, tl, st, g, t, PF == 2 ? b2 : b1);
      fused_step<F, NT, R, XLO, ROT || STX>(p, px, pxlo, b0, s, cb, g, t, stab, acc, corr);
#pragma unroll
      for (int rr = 0; rr < R; ++rr) {
        b0[rr] = b1[rr];
        if (PF == 2) b1[rr] = b2[rr];
      }
    }
    fused_epilogue<F, NT, R, WARPS, AS>(p, acc, corr, red, row0, cb);
  }
}

template <int NT, int R, int WARPS> struct FusedShape {
  static constexpr int nt = NT, r = R, warps = WARPS;
};

/* Launch one tile shape over a persistent grid (at most one CTA per tile). */
template <class F, class Shape>
static int fused_launch_shape(const glq_cuda_ctx *ctx, FusedParams p, void (*kern)(const FusedParams), cudaStream_t st) {
  p.col_blocks = (p.B + 8 * Shape::nt - 1) / (8 * Shape::nt);
  p.row_tiles = (p.out + 16 * Shape::r - 1) / (16 * Shape::r);
  /* (+16 B: a codebook gather reads word n_smem of the table head, see e8_word) */
  const size_t smem = sizeof(float) * FUSED_RED_FLOATS + (F::kTable ? sizeof(uint32_t) * (p.n_smem + 4) : 0) +
                      (p.rot.io.src ? fused_rot_bytes(p.in, p.B) : 0) + (p.stage_x ? fused_stage_bytes(p) : 0);
  GLQ_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  int occ = 0;
  GLQ_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, Shape::warps * 32, smem));
  if (occ < 1) return glq_error(GLQ_EUNSUPPORTED, "fused kernel: no resident CTA with %zu B of shared memory", smem);
  const int64_t ntiles = (int64_t)p.row_tiles * p.col_blocks;
  const int grid = (int)(ntiles < (int64_t)ctx->sms * occ ? ntiles : (int64_t)ctx->sms * occ);
  return glq_launch_pdl(ctx, kern, dim3(grid), dim3(Shape::warps * 32), smem, st, p);
}

/* Tile shapes (cfg): 0 = 16 rows x 16 warps; 1 = 32 rows x 8 warps (x fragments reused over twice
 * the rows); 2 = 16 rows x 8 warps with two CTAs per multiprocessor (registers capped at 128; not
 * with the E8 codebook's 216 KB of shared memory): twice the warps in flight per multiprocessor.
 * By default HiF4 and E8P (formats without a table or with a small one) take 2 for B <= 8 (the fastest on every measured shape); otherwise 1 when its tiles
 * fill more than half the multiprocessors, else 0 (twice as many CTAs): the faster one in every
 * measured case but a few within 10% (docs/cuda-notes.md). */
template <class F, bool XLO>
static int fused_launch_cfg(const glq_cuda_ctx *ctx, const FusedParams &p, int cfg, cudaStream_t st) {
  if (p.B <= 8) {
    if (cfg == 0) return fused_launch_shape<F, FusedShape<1, 1, 16>>(ctx, p, fused_kernel<F, 1, 1, 16, 1, XLO>, st);
    if (cfg == 2) return fused_launch_shape<F, FusedShape<1, 1, 8>>(ctx, p, fused_kernel<F, 1, 1, 8, 2, XLO>, st);
    return fused_launch_shape<F, FusedShape<1, 2, 8>>(ctx, p, fused_kernel<F, 1, 2, 8, 1, XLO>, st);
  }
  if (cfg == 0) return fused_launch_shape<F, FusedShape<2, 1, 16>>(ctx, p, fused_kernel<F, 2, 1, 16, 1, XLO>, st);
  if (cfg == 2) return fused_launch_shape<F, FusedShape<2, 1, 8>>(ctx, p, fused_kernel<F, 2, 1, 8, 2, XLO>, st);
  return fused_launch_shape<F, FusedShape<2, 2, 8>>(ctx, p, fused_kernel<F, 2, 2, 8, 1, XLO>, st);
}

/* The cfg 2 shape with x built in the prologue (ROT) or staged in shared memory (STX). */
template <class F, bool ROT, bool STX>
static int fused_launch_cfg2(const glq_cuda_ctx *ctx, const FusedParams &p, cudaStream_t st) {
  return p.xlo ? fused_launch_shape<F, FusedShape<1, 1, 8>>(ctx, p, fused_kernel<F, 1, 1, 8, 2, true, ROT, STX>, st)
               : fused_launch_shape<F, FusedShape<1, 1, 8>>(ctx, p, fused_kernel<F, 1, 1, 8, 2, false, ROT, STX>, st);
}

template <class F>
static int fused_launch(const glq_cuda_ctx *ctx, const FusedParams &p, cudaStream_t st) {
  if (p.rot.io.src) { /* the prologue: cfg 2 at B <= FUSED_ROT_B (formats with a small table only) */
    if constexpr (FmtSmallTable<F>::v) {
      if (p.B <= FUSED_ROT_B && p.in == 1 << p.rot.lg) return fused_launch_cfg2<F, true, false>(ctx, p, st);
    }
    return glq_error(GLQ_EUNSUPPORTED, "fused kernel: no prologue transform for this format, batch %d or size %d", p.B, p.in);
  }
  int cfg = ctx->fused_cfg;
  if (cfg < 0) cfg = (FmtSmallTable<F>::v && p.B <= 8) ? 2 : (p.out + 31) / 32 > ctx->sms / 2 ? 1 : 0;
  if constexpr (FmtSmallTable<F>::v) { /* staged inputs (cfg 2 shape) */
    if (ctx->stage_x && cfg == 2 && p.B <= FUSED_STAGE_B && p.in % 8 == 0 && fused_stage_bytes(p) <= FUSED_STAGE_BYTES) {
      FusedParams q = p;
      q.stage_x = 1;
      return fused_launch_cfg2<F, false, true>(ctx, q, st);
    }
  }
  return p.xlo ? fused_launch_cfg<F, true>(ctx, p, cfg, st) : fused_launch_cfg<F, false>(ctx, p, cfg, st);
}

#endif
