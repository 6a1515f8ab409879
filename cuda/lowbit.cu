/* lowbit.cu - E8P and trellis (3inst) matmuls on the GPU: fused decode + tensor cores for small batches,
 * decode to bf16 + cuBLAS for large ones (lowbit.cuh has the contract). Deterministic: every output is a
 * fixed-order sum (no atomics). */
#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fused_mma.cuh"
#include "lowbit.cuh"

/* ======================= E8P ======================= */

enum { E8P_TAB_WORDS = 2048 }; /* 256 rows of 4 bf16 pairs: absolute vectors, then E81B */

struct glq_cuda_e8p_tables {
  uint32_t *words; /* E8P_TAB_WORDS, device */
};

/* bf16 bits of a small integer (exact: at most 8 significant bits) */
static uint32_t bf16_int(int v) {
  float f = (float)v;
  uint32_t u;
  memcpy(&u, &f, 4);
  return u >> 16;
}

int glq_cuda_e8p_tables_create(const uint32_t *packed_abs, const int8_t *e81b4, glq_cuda_e8p_tables **out) {
  static const int SHUF[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* e8p.h: coordinate i is nibble SHUF[i] */
  *out = NULL;
  uint32_t h[E8P_TAB_WORDS];
  for (int a = 0; a < 256; ++a)
    for (int q = 0; q < 4; ++q) {
      int v[2];
      for (int k = 0; k < 2; ++k) {
        const int i = 2 * q + k, nib = (int)((packed_abs[a] >> (4 * SHUF[i])) & 15u);
        v[k] = 2 * (nib - 8); /* 4·a_i, coordinate 7 negative when sum(a) is odd */
        if (v[k] < -14 || v[k] > 14 || ((v[k] + 16) & 3) != 2)
          return glq_error(GLQ_EINVAL, "glq_cuda_e8p_tables_create: absolute vector %d coordinate %d: 4a = %d is not 2 mod 4 in [-14, 14]",
                             a, i, v[k]);
      }
      h[4 * a + q] = bf16_int(v[0]) | bf16_int(v[1]) << 16;
    }
  for (int j = 0; j < 256; ++j)
    for (int q = 0; q < 4; ++q) {
      const int v0 = e81b4[8 * j + 2 * q], v1 = e81b4[8 * j + 2 * q + 1];
      if (v0 < -8 || v0 > 8 || v1 < -8 || v1 > 8)
        return glq_error(GLQ_EINVAL, "glq_cuda_e8p_tables_create: E81B entry %d is outside [-8, 8] (times 4)", j);
      h[1024 + 4 * j + q] = bf16_int(v0) | bf16_int(v1) << 16;
    }
  glq_cuda_e8p_tables *t = (glq_cuda_e8p_tables *)calloc(1, sizeof *t);
  cudaError_t e = t ? cudaMalloc(&t->words, sizeof h) : cudaErrorMemoryAllocation;
  if (e == cudaSuccess) e = cudaMemcpy(t->words, h, sizeof h, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    if (t) cudaFree(t->words);
    free(t);
    return glq_error(GLQ_ENOMEM, "glq_cuda_e8p_tables_create: %s", cudaGetErrorString(e));
  }
  *out = t;
  return GLQ_OK;
}

void glq_cuda_e8p_tables_free(glq_cuda_e8p_tables *t) {
  if (!t) return;
  cudaFree(t->words);
  free(t);
}

/* The four bf16 pairs (4x the coordinates 2q, 2q+1) of the E8P entry with table row a (4|a_i|, coordinate 7
 * pre-negated for an odd sum) and sign byte s0: p = parity(s0), coordinate i negated when bit SHUF[i] of
 * s0 ^ p is set (coordinate 2q: bit q, 2q+1: bit q + 4), then + (p ? -1 : +1). Exact in bf16 (odd integers
 * of magnitude <= 15). */
__device__ __forceinline__ void e8p_pairs(const uint4 &a, uint32_t s0, uint32_t e[4]) {
  const uint32_t p = __popc(s0) & 1u, s = s0 ^ p;
  const uint32_t x = (s & 0xFu) | ((s & 0xF0u) << 12); /* bit q -> q, bit q+4 -> 16+q */
  const uint32_t shift = p ? 0xBF80BF80u : 0x3F803F80u, one = 0x3F803F80u;
  e[0] = bf16x2_fma(a.x ^ ((x << 15) & 0x80008000u), one, shift);
  e[1] = bf16x2_fma(a.y ^ ((x << 14) & 0x80008000u), one, shift);
  e[2] = bf16x2_fma(a.z ^ ((x << 13) & 0x80008000u), one, shift);
  e[3] = bf16x2_fma(a.w ^ ((x << 12) & 0x80008000u), one, shift);
}


/* S2: 0 = 2 bits, 1 = 3 bits (stage 2 E81B, u8 index), 2 = 4 bits (stage 2 E8P, u16 index). The planes are
 * glq_cuda_e8's (the E8 shell format's layout); gather reads a 16-byte table row from shared memory. */
template <int S2> struct E8PFmt {
  static constexpr int kStages = S2 ? 2 : 1;
  static constexpr bool kTable = true, kSmallTable = true;
  static constexpr int kPrefetch = S2 == 2 ? 1 : 2;
  static constexpr int kGather = 2;
  static constexpr uint32_t kBias = 0;
  typedef uint4 Word;
  typedef E8Raw<S2> Raw;
  static __device__ __forceinline__ void load(const FusedParams &p, int row0, int s, int g, int t, Raw &r) {
    e8_planes_load<S2>(p, row0, s, g, t, r);
  }
  static __device__ __forceinline__ uint32_t idx1(const Raw &r, int i, int h) {
    return (u4get(r.q1[h], i >> 1) >> (16 * (i & 1))) & 0xFFFFu;
  }
  static __device__ __forceinline__ uint32_t idx2(const Raw &r, int i, int h) {
    if constexpr (S2 == 1) return (((i < 4) ? r.q2[h].x : r.q2[h].y) >> (8 * (i & 3))) & 0xFFu;
    else if constexpr (S2 == 2) return (u4get(r.q2[h], i >> 1) >> (16 * (i & 1))) & 0xFFFFu;
    else return 0;
  }
  static __device__ __forceinline__ void gather(const FusedParams &, const Raw &r, int i, int h, const uint32_t *stab,
                                                Word (&wd)[kStages]) {
    const uint4 *tab = reinterpret_cast<const uint4 *>(stab);
    wd[0] = tab[idx1(r, i, h) >> 8];
    if constexpr (S2 == 1) wd[kStages - 1] = tab[256 + idx2(r, i, h)];
    if constexpr (S2 == 2) wd[kStages - 1] = tab[idx2(r, i, h) >> 8];
  }
  static __device__ __forceinline__ void unpack(const FusedParams &, const Raw &r, int i, int h, const Word (&wd)[kStages],
                                                uint32_t (&e)[kStages][4]) {
    e8p_pairs(wd[0], idx1(r, i, h) & 0xFFu, e[0]);
    if constexpr (S2 == 1) {
      e[1][0] = wd[1].x, e[1][1] = wd[1].y, e[1][2] = wd[1].z, e[1][3] = wd[1].w;
    }
    if constexpr (S2 == 2) e8p_pairs(wd[1], idx2(r, i, h) & 0xFFu, e[1]);
  }
};

/* w[r, 8j:8j+8] = bf16(4C1 + inv_rs · 4C2) for every group of the real out x in; one thread per group. */
template <int S2>
static __global__ void __launch_bounds__(256) e8p_dequant_kernel(const uint8_t *__restrict__ q1, const uint8_t *__restrict__ q2,
                                                          int64_t pitch1, int64_t pitch2, const uint32_t *__restrict__ tab,
                                                          int out, int in, float inv_rs, uint16_t *__restrict__ w) {
  const int groups = in / 8;
  const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= (int64_t)out * groups) return;
  const int64_t r = id / groups, j = id - r * groups;
  const uint4 *t4 = reinterpret_cast<const uint4 *>(tab);
  const uint32_t i1 = __ldg(reinterpret_cast<const uint16_t *>(q1 + r * pitch1) + j);
  uint32_t e[4];
  e8p_pairs(__ldg(t4 + (i1 >> 8)), i1 & 0xFFu, e);
  if (S2) {
    uint32_t f[4];
    if (S2 == 1) {
      const uint4 v = __ldg(t4 + 256 + __ldg(q2 + r * pitch2 + j));
      f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
    } else {
      const uint32_t i2 = __ldg(reinterpret_cast<const uint16_t *>(q2 + r * pitch2) + j);
      e8p_pairs(__ldg(t4 + (i2 >> 8)), i2 & 0xFFu, f);
    }
#pragma unroll
    for (int q = 0; q < 4; ++q)
      e[q] = pack_bf16x2(fmaf(inv_rs, bf16lo(f[q]), bf16lo(e[q])), fmaf(inv_rs, bf16hi(f[q]), bf16hi(e[q])));
  }
  *reinterpret_cast<uint4 *>(w + r * in + 8 * j) = make_uint4(e[0], e[1], e[2], e[3]);
}

static int e8p_matmul(glq_cuda_ctx *ctx, const glq_cuda_e8p_tables *t, const glq_cuda_e8 *l, const uint16_t *x,
                      const uint16_t *x_lo, const FusedRot *rot, int64_t B, void *y, int y_bf16, glq_cuda_path path,
                      cudaStream_t st) {
  int rc = glq_cuda_pick_path(ctx, l->out, l->in, B, path, &path);
  if (rc) return rc;
  if (rot && path != GLQ_CUDA_FUSED)
    return glq_error(GLQ_EUNSUPPORTED, "e8p matmul: the prologue transform runs on the fused path only (batch %lld)", (long long)B);
  const int S2 = l->bits == 2 ? 0 : l->bits == 3 ? 1 : 2;
  if (path == GLQ_CUDA_DEQUANT) {
    const int64_t n = l->out * (l->in / 8);
    void (*kern)(const uint8_t *, const uint8_t *, int64_t, int64_t, const uint32_t *, int, int, float, uint16_t *) =
        S2 == 0 ? e8p_dequant_kernel<0> : S2 == 1 ? e8p_dequant_kernel<1> : e8p_dequant_kernel<2>;
    kern<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(l->q1, l->q2, l->pitch1, l->pitch2, t->words, (int)l->out,
                                                     (int)l->in, l->inv_rs, ctx->scratch);
    GLQ_CUDA_LAUNCHED();
    return glq_cuda_gemm_scratch(ctx, l->out, l->in, x, x_lo, B, y, y_bf16, l->wscale * 0.25f, st);
  }
  FusedParams p = fused_params(x, x_lo, y, y_bf16, B, l->out, l->in, (int)(l->groups_pad / 32), l->q1, l->q2, l->pitch1,
                               l->pitch2, l->wscale * 0.25f);
  p.table = t->words;
  p.n_smem = E8P_TAB_WORDS;
  p.scale2 = l->inv_rs;
  if (rot) p.rot = *rot;
  return S2 == 0 ? fused_launch<E8PFmt<0>>(ctx, p, st) : S2 == 1 ? fused_launch<E8PFmt<1>>(ctx, p, st)
                                                              : fused_launch<E8PFmt<2>>(ctx, p, st);
}

int glq_cuda_e8p_matmul(glq_cuda_ctx *ctx, const glq_cuda_e8p_tables *t, const glq_cuda_e8 *l, const uint16_t *x,
                        const uint16_t *x_lo, int64_t B, void *y, int y_bf16, glq_cuda_path path, cudaStream_t st) {
  return e8p_matmul(ctx, t, l, x, x_lo, NULL, B, y, y_bf16, path, st);
}

int glq_cuda_e8p_matmul_rot(glq_cuda_ctx *ctx, const glq_cuda_e8p_tables *t, const glq_cuda_e8 *l, const FusedRot *rot,
                            int split, int64_t B, void *y, int y_bf16, cudaStream_t st) {
  /* x is built in the prologue; a non-NULL x_lo only selects the split kernel */
  static const uint16_t flag = 0;
  return e8p_matmul(ctx, t, l, NULL, split ? &flag : NULL, rot, B, y, y_bf16, GLQ_CUDA_FUSED, st);
}

/* ======================= trellis (3inst) ======================= */

enum { TR_WARPS = 16, TR_AHEAD = 8 };

struct glq_cuda_tr_layer {
  int K;
  int64_t m, n;     /* multiples of 16 */
  uint32_t *words;  /* tiles x 8K words: the tile's bitstream, 32 bits a word, most significant bit first */
  float wscale;
};

struct TrellisParams {
  const uint32_t *words;
  const uint16_t *x;   /* B x n bf16 */
  const uint16_t *xlo; /* NULL, or the bf16 remainders of x (XLO) */
  void *y;           /* B x m, f32 or bf16 */
  int y_bf16, B, m, n, tn;
  float wscale;
};

/* Lane l's states 8l .. 8l+7 of a tile whose word `lane` (< 8K) each lane holds in `word`, as the four A registers
 * of m16n8k16: hi = bf16 of the values, lo (when wanted) = bf16 of the rest (exact: an fp16 has 11 bits). */
template <int K, bool LO>
__device__ __forceinline__ void tr_decode(uint32_t word, int lane, uint32_t hi[4], uint32_t lo[4]) {
  constexpr int WPT = 8 * K;
  const int b0 = 8 * K * lane, w0 = b0 >> 5, off = b0 & 31; /* off is a multiple of 8 */
  const uint32_t W0 = __shfl_sync(0xFFFFFFFFu, word, w0 % WPT), W1 = __shfl_sync(0xFFFFFFFFu, word, (w0 + 1) % WPT),
                 W2 = __shfl_sync(0xFFFFFFFFu, word, (w0 + 2) % WPT);
  uint64_t X = ((uint64_t)W0 << 32) | W1; /* bits b0 .. b0 + 63 of the (wrapped) stream, MSB first */
  if (off) X = (X << off) | (W2 >> (32 - off));
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float v0 = glq_3inst((uint32_t)(X >> (48 - 2 * q * K)) & 0xFFFFu);
    const float v1 = glq_3inst((uint32_t)(X >> (48 - (2 * q + 1) * K)) & 0xFFFFu);
    hi[q] = pack_bf16x2(v0, v1);
    if (LO) lo[q] = pack_bf16x2(v0 - bf16lo(hi[q]), v1 - bf16hi(hi[q]));
  }
}

/* A CTA per (16-row tile, 8·NT batch columns); its warps take column tiles w, w + TR_WARPS, ... and load
 * TR_AHEAD tiles ahead; partial sums are added over the warps in a fixed order. XLO: x = x + xlo, and the
 * hi weights also multiply xlo (lo · xlo, below 2^-17 of the product, is left out). */
template <int K, int NT, bool XLO>
static __global__ void __launch_bounds__(TR_WARPS * 32, 2) trellis_mm_kernel(const TrellisParams p) {
  constexpr int WPT = 8 * K;
  __shared__ __align__(16) float red[TR_WARPS][NT][128];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int rt = blockIdx.x, cb = blockIdx.y;
  const uint32_t *tw = p.words + (int64_t)rt * p.tn * WPT + (lane < WPT ? lane : 0);
  uint32_t cur[TR_AHEAD];
#pragma unroll
  for (int u = 0; u < TR_AHEAD; ++u) {
    const int c = w + TR_WARPS * u;
    cur[u] = c < p.tn ? ldg_stream4(tw + (int64_t)c * WPT) : 0u;
  }
  glq_grid_wait(); /* the weights are constants; x comes from the kernel before */
  glq_grid_release();
  const uint16_t *xr[NT], *xl[NT];
  bool ok[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int n = cb * 8 * NT + 8 * nt + g;
    ok[nt] = n < p.B;
    xr[nt] = p.x + (int64_t)(ok[nt] ? n : 0) * p.n + 2 * t;
    xl[nt] = XLO ? p.xlo + (int64_t)(ok[nt] ? n : 0) * p.n + 2 * t : NULL;
  }
  float ah[NT][4] = {}, al[NT][4] = {};
  for (int c0 = w; c0 < p.tn; c0 += TR_WARPS * TR_AHEAD) {
    uint32_t nxt[TR_AHEAD];
#pragma unroll
    for (int u = 0; u < TR_AHEAD; ++u) {
      const int c = c0 + TR_WARPS * (TR_AHEAD + u);
      nxt[u] = c < p.tn ? ldg_stream4(tw + (int64_t)c * WPT) : 0u;
    }
#pragma unroll
    for (int u = 0; u < TR_AHEAD; ++u) {
      const int c = c0 + TR_WARPS * u;
      if (c >= p.tn) break; /* warp-uniform */
      uint32_t hi[4], lo[4];
      tr_decode<K, true>(cur[u], lane, hi, lo);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint32_t b0 = ok[nt] ? __ldg(reinterpret_cast<const uint32_t *>(xr[nt] + 16 * c)) : 0u;
        const uint32_t b1 = ok[nt] ? __ldg(reinterpret_cast<const uint32_t *>(xr[nt] + 16 * c + 8)) : 0u;
        mma_bf16_16816(ah[nt], hi[0], hi[1], hi[2], hi[3], b0, b1);
        mma_bf16_16816(al[nt], lo[0], lo[1], lo[2], lo[3], b0, b1);
        if constexpr (XLO) {
          const uint32_t c0 = ok[nt] ? __ldg(reinterpret_cast<const uint32_t *>(xl[nt] + 16 * c)) : 0u;
          const uint32_t c1 = ok[nt] ? __ldg(reinterpret_cast<const uint32_t *>(xl[nt] + 16 * c + 8)) : 0u;
          mma_bf16_16816(al[nt], hi[0], hi[1], hi[2], hi[3], c0, c1);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < TR_AHEAD; ++u) cur[u] = nxt[u];
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
    *reinterpret_cast<float4 *>(&red[w][nt][lane * 4]) =
        make_float4(ah[nt][0] + al[nt][0], ah[nt][1] + al[nt][1], ah[nt][2] + al[nt][2], ah[nt][3] + al[nt][3]);
  __syncthreads();
  for (int tid = threadIdx.x; tid < NT * 128; tid += TR_WARPS * 32) {
    const int nt = tid >> 7, i = tid & 127, ln = i >> 2, j = i & 3;
    float v = 0.f;
#pragma unroll
    for (int ww = 0; ww < TR_WARPS; ++ww) v += red[ww][nt][i];
    const int row = rt * 16 + (ln >> 2) + 8 * (j >> 1), n = cb * 8 * NT + 8 * nt + 2 * (ln & 3) + (j & 1);
    if (n < p.B) {
      const int64_t o = (int64_t)n * p.m + row;
      if (p.y_bf16) reinterpret_cast<__nv_bfloat16 *>(p.y)[o] = __float2bfloat16_rn(p.wscale * v);
      else reinterpret_cast<float *>(p.y)[o] = p.wscale * v;
    }
  }
}

/* w (m x n bf16) = the decoded tiles (without wscale), one warp per tile. */
template <int K>
static __global__ void __launch_bounds__(256) trellis_dequant_kernel(const uint32_t *__restrict__ words, int64_t ntiles, int tn,
                                                              int n, uint16_t *__restrict__ w) {
  constexpr int WPT = 8 * K;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t tile = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
  if (tile >= ntiles) return; /* warp-uniform */
  const uint32_t word = lane < WPT ? __ldg(words + tile * WPT + lane) : 0u;
  uint32_t hi[4];
  tr_decode<K, false>(word, lane, hi, hi);
  const int64_t rt = tile / tn, ct = tile - rt * tn;
  uint16_t *d = w + (rt * 16 + g) * n + ct * 16 + 2 * t;
  *reinterpret_cast<uint32_t *>(d) = hi[0];
  *reinterpret_cast<uint32_t *>(d + 8 * (int64_t)n) = hi[1];
  *reinterpret_cast<uint32_t *>(d + 8) = hi[2];
  *reinterpret_cast<uint32_t *>(d + 8 * (int64_t)n + 8) = hi[3];
}

int glq_cuda_tr_layer_create(int K, int64_t m, int64_t n, const uint16_t *words, float wscale, glq_cuda_tr_layer **out) {
  *out = NULL;
  if (K < 2 || K > 4) return glq_error(GLQ_EUNSUPPORTED, "glq_cuda_tr_layer_create: K = %d (the GPU kernels take 2, 3, 4)", K);
  if (m < 16 || n < 16 || m % 16 || n % 16 || m > (1 << 24) || n > (1 << 24) || m * n > ((int64_t)1 << 34))
    return glq_error(GLQ_EINVAL, "glq_cuda_tr_layer_create: shape %lld x %lld (multiples of 16 needed)", (long long)m, (long long)n);
  if (!isfinite(wscale)) return glq_error(GLQ_EINVAL, "glq_cuda_tr_layer_create: Wscale is not finite");
  const int64_t ntiles = (m / 16) * (n / 16), nw = ntiles * 8 * K;
  uint32_t *h = (uint32_t *)malloc((size_t)nw * sizeof(uint32_t));
  glq_cuda_tr_layer *l = (glq_cuda_tr_layer *)calloc(1, sizeof *l);
  if (!h || !l) {
    free(h), free(l);
    return glq_error(GLQ_ENOMEM, "glq_cuda_tr_layer_create: out of host memory");
  }
  for (int64_t i = 0; i < nw; ++i) h[i] = (uint32_t)words[2 * i] << 16 | words[2 * i + 1];
  l->K = K, l->m = m, l->n = n, l->wscale = wscale;
  cudaError_t e = cudaMalloc(&l->words, (size_t)nw * sizeof(uint32_t));
  if (e == cudaSuccess) e = cudaMemcpy(l->words, h, (size_t)nw * sizeof(uint32_t), cudaMemcpyHostToDevice);
  free(h);
  if (e != cudaSuccess) {
    glq_cuda_tr_layer_free(l);
    return glq_error(GLQ_ENOMEM, "glq_cuda_tr_layer_create: %s", cudaGetErrorString(e));
  }
  *out = l;
  return GLQ_OK;
}

void glq_cuda_tr_layer_free(glq_cuda_tr_layer *l) {
  if (!l) return;
  cudaFree(l->words);
  free(l);
}

size_t glq_cuda_tr_layer_bytes(const glq_cuda_tr_layer *l) { return (size_t)((l->m / 16) * (l->n / 16) * 32 * l->K); }

template <int NT, bool XLO>
static void (*tr_kernel(int K))(const TrellisParams) {
  return K == 2 ? trellis_mm_kernel<2, NT, XLO> : K == 3 ? trellis_mm_kernel<3, NT, XLO> : trellis_mm_kernel<4, NT, XLO>;
}

int glq_cuda_tr_layer_matmul(glq_cuda_ctx *ctx, const glq_cuda_tr_layer *l, const uint16_t *x, const uint16_t *x_lo,
                             int64_t B, void *y,
                            int y_bf16, glq_cuda_path path, cudaStream_t st) {
  int rc = glq_cuda_pick_path(ctx, l->m, l->n, B, path, &path);
  if (rc) return rc;
  const int64_t tn = l->n / 16, ntiles = (l->m / 16) * tn;
  if (path == GLQ_CUDA_DEQUANT) {
    void (*kern)(const uint32_t *, int64_t, int, int, uint16_t *) =
        l->K == 2 ? trellis_dequant_kernel<2> : l->K == 3 ? trellis_dequant_kernel<3> : trellis_dequant_kernel<4>;
    kern<<<(unsigned)((ntiles + 7) / 8), 256, 0, st>>>(l->words, ntiles, (int)tn, (int)l->n, ctx->scratch);
    GLQ_CUDA_LAUNCHED();
    return glq_cuda_gemm_scratch(ctx, l->m, l->n, x, x_lo, B, y, y_bf16, l->wscale, st);
  }
  const int nt = B <= 8 ? 1 : 2;
  const int64_t cbs = (B + 8 * nt - 1) / (8 * nt);
  if (cbs > 65535) return glq_error(GLQ_EINVAL, "trellis matmul: batch %lld is too large for the fused kernel", (long long)B);
  TrellisParams p = {l->words, x, x_lo, y, y_bf16, (int)B, (int)l->m, (int)l->n, (int)tn, l->wscale};
  const dim3 grid((unsigned)(l->m / 16), (unsigned)cbs);
  void (*kern)(const TrellisParams) = nt == 1 ? (x_lo ? tr_kernel<1, true>(l->K) : tr_kernel<1, false>(l->K))
                                              : (x_lo ? tr_kernel<2, true>(l->K) : tr_kernel<2, false>(l->K));
  return glq_launch_pdl(ctx, kern, grid, dim3(TR_WARPS * 32), 0, st, p);
}
