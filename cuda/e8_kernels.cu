/* e8_kernels.cu - glq E8 layers on the GPU: codebook upload, weight upload, fused matmul,
 * dequantization to bf16 (for the cuBLAS path). Format: docs/format.md; codebook: ../shared/docs/glq-spec.md §1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fused_mma.cuh"

/* Device codebook word of one entry: 8 nibbles c = 2v + 6 in [0, 12]. Coordinate 2q sits in bits
 * 4q..4q+3 and coordinate 2q+1 in bits 16+4q..16+4q+3, so one shift and one mask put the pair
 * (2q, 2q+1) into the two halves of a bf16 pair (see e8_pairs). */
enum { E8_ENTRIES = 65536, E8_SMEM_MAX = 55296 /* 216 KB: plus 8 KB of reduction space <= 227 KB */ };

struct glq_cuda_codebook {
  uint32_t *words; /* 65536, device */
};

/* struct glq_cuda_e8 (the index planes, shared with the E8P kernels of lowbit.cu): common.cuh */

/* bf16 pairs of the 8 coordinates: pair q = (v_2q, v_2q+1) with v = c/2 - 3, exact.
 * (c << 3) | 0x4100 is the bf16 of 8 + c/2; one fma subtracts 11. */
__device__ __forceinline__ void e8_pairs(uint32_t w, uint32_t e[4]) {
  const uint32_t mask = 0x00780078u, magic = 0x41004100u, one = 0x3F803F80u, m11 = 0xC130C130u;
  e[0] = bf16x2_fma(((w << 3) & mask) | magic, one, m11);
  e[1] = bf16x2_fma(((w >> 1) & mask) | magic, one, m11);
  e[2] = bf16x2_fma(((w >> 5) & mask) | magic, one, m11);
  e[3] = bf16x2_fma(((w >> 9) & mask) | magic, one, m11);
}

/* The same pairs plus 11 (bf16 of 8 + c/2): two operations a pair; the fused kernel removes the 11. */
__device__ __forceinline__ void e8_pairs_biased(uint32_t w, uint32_t e[4]) {
  const uint32_t mask = 0x00780078u, magic = 0x41004100u;
  e[0] = ((w << 3) & mask) | magic;
  e[1] = ((w >> 1) & mask) | magic;
  e[2] = ((w >> 5) & mask) | magic;
  e[3] = ((w >> 9) & mask) | magic;
}

/* Codebook word idx: from the shared-memory head, or (idx >= n_smem) through L1/L2. Branch-free:
 * every lane reads shared memory (word min(idx, n_smem), so the caller allocates n_smem + 1 words
 * or more) and a predicated global load overwrites it, so a warp never splits over the two paths. */
__device__ __forceinline__ uint32_t e8_word(const uint32_t *stab, const uint32_t *table, int n_smem, uint32_t idx) {
  uint32_t w = stab[min(idx, (uint32_t)n_smem)];
  asm("{\n\t.reg .pred p;\n\tsetp.ge.u32 p, %1, %2;\n\t@p ld.global.nc.u32 %0, [%3];\n\t}"
      : "+r"(w) : "r"(idx), "r"(n_smem), "l"(table + idx));
  return w;
}


/* S2: 0 = 2 bits (one stage), 1 = 3 bits (stage-2 index u8), 2 = 4 bits (stage-2 index u16). */
template <int S2> struct E8Fmt {
  static constexpr int kStages = S2 ? 2 : 1;
  static constexpr bool kTable = true;
  static constexpr int kPrefetch = S2 == 2 ? 1 : 2;
  static constexpr uint32_t kBias = 0x41304130u; /* 11.0 in both halves */
  typedef E8Raw<S2> Raw;
  static __device__ __forceinline__ void load(const FusedParams &p, int row0, int s, int g, int t, Raw &r) {
    e8_planes_load<S2>(p, row0, s, g, t, r);
  }
  static __device__ __forceinline__ void gather(const FusedParams &p, const Raw &r, int i, int h,
                                                const uint32_t *stab, uint32_t (&wd)[kStages]) {
    wd[0] = e8_word(stab, p.table, p.n_smem, (u4get(r.q1[h], i >> 1) >> (16 * (i & 1))) & 0xFFFFu);
    if constexpr (S2 == 1)
      wd[kStages - 1] = e8_word(stab, p.table, p.n_smem, (((i < 4) ? r.q2[h].x : r.q2[h].y) >> (8 * (i & 3))) & 0xFFu);
    if constexpr (S2 == 2)
      wd[kStages - 1] = e8_word(stab, p.table, p.n_smem, (u4get(r.q2[h], i >> 1) >> (16 * (i & 1))) & 0xFFFFu);
  }
  static __device__ __forceinline__ void unpack(const FusedParams &, const Raw &, int, int, const uint32_t (&wd)[kStages],
                                                uint32_t (&e)[kStages][4]) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) e8_pairs_biased(wd[st], e[st]);
  }
};

/* w[r, 8j:8j+8] = bf16(C[q1] + inv_rs * C[q2]) for every group. Persistent grid, codebook head in
 * shared memory (large layers); a warp converts SEGS runs of 32 consecutive groups per iteration, all
 * SEGS index loads issued before the first gather (the loop is latency-bound otherwise). Small layers
 * use SEGS = 1 and 256-thread blocks, so that many multiprocessors share the work. */
template <int S2, int SEGS>
static __global__ void __launch_bounds__(1024) e8_dequant_kernel(const uint8_t *__restrict__ q1, const uint8_t *__restrict__ q2,
                                                          int64_t pitch1, int64_t pitch2, const uint32_t *__restrict__ table,
                                                          int n_smem, int out, int in, float inv_rs, uint16_t *__restrict__ w) {
  extern __shared__ __align__(16) uint32_t stab[];
  glq_cp_async16(stab, table, n_smem / 4, blockDim.x);
  asm volatile("cp.async.wait_all;");
  __syncthreads();
  const int groups = in / 8, spr = (int)(pitch1 / 64), nseg = out * spr;
  const int lane = threadIdx.x & 31;
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, nwarps = (gridDim.x * blockDim.x) >> 5;
  for (int base = warp * SEGS; base < nseg; base += nwarps * SEGS) {
    uint32_t i1[SEGS], i2[SEGS];
    int r[SEGS], j[SEGS];
#pragma unroll
    for (int k = 0; k < SEGS; ++k) {
      const int seg = base + k;
      r[k] = seg / spr;
      j[k] = 32 * (seg - r[k] * spr) + lane;
      const bool ok = seg < nseg && j[k] < groups;
      if (!ok) j[k] = -1;
      i1[k] = ok ? __ldg(reinterpret_cast<const uint16_t *>(q1 + r[k] * pitch1) + j[k]) : 0u;
      if (S2 == 1) i2[k] = ok ? __ldg(q2 + r[k] * pitch2 + j[k]) : 0u;
      if (S2 == 2) i2[k] = ok ? __ldg(reinterpret_cast<const uint16_t *>(q2 + r[k] * pitch2) + j[k]) : 0u;
    }
#pragma unroll
    for (int k = 0; k < SEGS; ++k) {
      if (j[k] < 0) continue;
      uint32_t e[4];
      e8_pairs(e8_word(stab, table, n_smem, i1[k]), e);
      if (S2) {
        uint32_t f[4];
        e8_pairs(e8_word(stab, table, n_smem, i2[k]), f);
#pragma unroll
        for (int q = 0; q < 4; ++q)
          e[q] = pack_bf16x2(fmaf(inv_rs, bf16lo(f[q]), bf16lo(e[q])), fmaf(inv_rs, bf16hi(f[q]), bf16hi(e[q])));
      }
      *reinterpret_cast<uint4 *>(w + (int64_t)r[k] * in + 8 * j[k]) = make_uint4(e[0], e[1], e[2], e[3]);
    }
  }
}

extern "C" int glq_cuda_codebook_create(const float *table, glq_cuda_codebook **out) {
  *out = NULL;
  uint32_t *words = (uint32_t *)malloc(sizeof(uint32_t) * E8_ENTRIES);
  if (!words) return glq_error(GLQ_ENOMEM, "glq_cuda_codebook_create: out of host memory");
  for (int e = 0; e < E8_ENTRIES; ++e) {
    uint32_t wd = 0;
    for (int k = 0; k < 8; ++k) {
      const float v = table[8 * e + k], c = 2.f * v + 6.f;
      if (!(c >= 0.f && c <= 12.f) || c != floorf(c)) {
        free(words);
        return glq_error(GLQ_EINVAL, "glq_cuda_codebook_create: entry %d coordinate %d = %g is not a multiple of 0.5 in [-3, 3]", e, k, (double)v);
      }
      wd |= (uint32_t)c << ((k & 1) * 16 + (k >> 1) * 4);
    }
    words[e] = wd;
  }
  glq_cuda_codebook *cb = (glq_cuda_codebook *)calloc(1, sizeof *cb);
  cudaError_t err = cb ? cudaMalloc(&cb->words, sizeof(uint32_t) * E8_ENTRIES) : cudaErrorMemoryAllocation;
  if (err == cudaSuccess) err = cudaMemcpy(cb->words, words, sizeof(uint32_t) * E8_ENTRIES, cudaMemcpyHostToDevice);
  free(words);
  if (err != cudaSuccess) {
    if (cb) cudaFree(cb->words);
    free(cb);
    return glq_error(GLQ_ENOMEM, "glq_cuda_codebook_create: %s", cudaGetErrorString(err));
  }
  *out = cb;
  return GLQ_OK;
}

extern "C" void glq_cuda_codebook_free(glq_cuda_codebook *cb) {
  if (!cb) return;
  cudaFree(cb->words);
  free(cb);
}

extern "C" void glq_cuda_e8_free(glq_cuda_e8 *l) {
  if (!l) return;
  cudaFree(l->q1);
  cudaFree(l->q2);
  free(l);
}

/* Copy an (out x in/8) index plane into a zero-padded (rows_pad x groups_pad) plane of esize-byte values. */
static int e8_upload_plane(const int16_t *src, int64_t out, int64_t groups, int64_t rows_pad, int64_t groups_pad,
                           int esize, uint8_t **dst) {
  const size_t bytes = (size_t)rows_pad * groups_pad * esize;
  uint8_t *h = (uint8_t *)calloc(bytes, 1);
  if (!h) return glq_error(GLQ_ENOMEM, "glq_cuda_e8_create: out of host memory");
  for (int64_t r = 0; r < out; ++r)
    for (int64_t j = 0; j < groups; ++j) {
      const uint16_t v = (uint16_t)src[r * groups + j];
      if (esize == 1) {
        if (v > 255) {
          free(h);
          return glq_error(GLQ_EINVAL, "glq_cuda_e8_create: 3-bit stage-2 index %u at (%lld, %lld) is not < 256",
                           v, (long long)r, (long long)j);
        }
        h[r * groups_pad + j] = (uint8_t)v;
      } else {
        memcpy(h + 2 * (r * groups_pad + j), &v, 2);
      }
    }
  cudaError_t e = cudaMalloc(dst, bytes);
  if (e == cudaSuccess) e = cudaMemcpy(*dst, h, bytes, cudaMemcpyHostToDevice);
  free(h);
  if (e != cudaSuccess) return glq_error(GLQ_ENOMEM, "glq_cuda_e8_create: %s", cudaGetErrorString(e));
  return GLQ_OK;
}

extern "C" int glq_cuda_e8_create(const glq_cuda_codebook *cb, int bits, int64_t out, int64_t in,
                                  const int16_t *q1, const int16_t *q2, float wscale, float inv_rs,
                                  glq_cuda_e8 **layer) {
  *layer = NULL;
  if (bits < 2 || bits > 4) return glq_error(GLQ_EINVAL, "glq_cuda_e8_create: bits %d not in {2, 3, 4}", bits);
  if (out < 1 || in < 8 || in % 8 || out > (1 << 20) || in > (1 << 20) || out * in > ((int64_t)1 << 31))
    return glq_error(GLQ_EINVAL, "glq_cuda_e8_create: shape %lld x %lld (in must be a multiple of 8)", (long long)out, (long long)in);
  if ((bits > 2) != (q2 != NULL)) return glq_error(GLQ_EINVAL, "glq_cuda_e8_create: stage-2 indices needed iff bits > 2");
  glq_cuda_e8 *l = (glq_cuda_e8 *)calloc(1, sizeof *l);
  if (!l) return glq_error(GLQ_ENOMEM, "glq_cuda_e8_create: out of host memory");
  l->cb = cb;
  l->bits = bits;
  l->out = out;
  l->in = in;
  l->rows_pad = glq_round_up(out, GLQ_ROWS_PAD);
  l->groups_pad = glq_round_up(in / 8, GLQ_STEP_K / 8);
  l->pitch1 = 2 * l->groups_pad;
  l->pitch2 = bits == 3 ? l->groups_pad : bits == 4 ? 2 * l->groups_pad : 0;
  l->wscale = wscale;
  l->inv_rs = bits > 2 ? inv_rs : 0.f;
  int rc = e8_upload_plane(q1, out, in / 8, l->rows_pad, l->groups_pad, 2, &l->q1);
  if (!rc && bits > 2) rc = e8_upload_plane(q2, out, in / 8, l->rows_pad, l->groups_pad, bits == 3 ? 1 : 2, &l->q2);
  if (rc) {
    glq_cuda_e8_free(l);
    return rc;
  }
  *layer = l;
  return GLQ_OK;
}

extern "C" size_t glq_cuda_e8_bytes(const glq_cuda_e8 *l) {
  return (size_t)(l->pitch1 + l->pitch2) * (size_t)l->rows_pad;
}

/* Codebook words to keep in shared memory: all that fit when the layer gathers enough to repay
 * copying 216 KB into every multiprocessor, else none (gathers then go through L1/L2). */
static int e8_smem_entries(const glq_cuda_ctx *ctx, const glq_cuda_e8 *l) {
  int n = ctx->e8_smem_entries;
  if (n < 0) n = (l->out * (l->in / 8) * (l->bits == 4 ? 2 : 1) >= ((int64_t)1 << 20)) ? E8_SMEM_MAX : 0;
  if (n > E8_SMEM_MAX) n = E8_SMEM_MAX;
  return n & ~3;
}

extern "C" int glq_cuda_e8_dequant(glq_cuda_ctx *ctx, const glq_cuda_e8 *l, uint16_t *w, void *stream) {
  cudaStream_t st = (cudaStream_t)stream;
  const int n_smem = e8_smem_entries(ctx, l);
  const size_t smem = sizeof(uint32_t) * (n_smem + 4); /* >= n_smem + 1 words: see e8_word */
  const bool big = n_smem > 0;
  const int threads = big ? 1024 : 256, segs = big ? 8 : 1;
  void (*kern)(const uint8_t *, const uint8_t *, int64_t, int64_t, const uint32_t *, int, int, int, float, uint16_t *) =
      big ? (l->bits == 2 ? e8_dequant_kernel<0, 8> : l->bits == 3 ? e8_dequant_kernel<1, 8> : e8_dequant_kernel<2, 8>)
          : (l->bits == 2 ? e8_dequant_kernel<0, 1> : l->bits == 3 ? e8_dequant_kernel<1, 1> : e8_dequant_kernel<2, 1>);
  GLQ_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  int occ = 0;
  GLQ_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, threads, smem));
  if (occ < 1) return glq_error(GLQ_EUNSUPPORTED, "glq_cuda_e8_dequant: kernel does not fit");
  const int64_t per_block = (int64_t)segs * threads / 32; /* runs of 32 groups per block and iteration */
  const int64_t need = (l->out * (l->pitch1 / 64) + per_block - 1) / per_block;
  const int grid = (int)(need < (int64_t)ctx->sms * occ ? need : (int64_t)ctx->sms * occ);
  kern<<<grid, threads, smem, st>>>(l->q1, l->q2, l->pitch1, l->pitch2, l->cb->words, n_smem, (int)l->out,
                                    (int)l->in, l->inv_rs, w);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

extern "C" int glq_cuda_e8_matmul(glq_cuda_ctx *ctx, const glq_cuda_e8 *l, const uint16_t *x, const uint16_t *x_lo, int64_t B,
                                  void *y, int y_bf16, glq_cuda_path path, void *stream) {
  cudaStream_t st = (cudaStream_t)stream;
  int rc = glq_cuda_pick_path(ctx, l->out, l->in, B, path, &path);
  if (rc) return rc;
  if (path == GLQ_CUDA_DEQUANT) {
    rc = glq_cuda_e8_dequant(ctx, l, ctx->scratch, stream);
    return rc ? rc : glq_cuda_gemm_scratch(ctx, l->out, l->in, x, x_lo, B, y, y_bf16, l->wscale, st);
  }
  FusedParams p = fused_params(x, x_lo, y, y_bf16, B, l->out, l->in, (int)(l->groups_pad / 32), l->q1, l->q2, l->pitch1,
                               l->pitch2, l->wscale);
  p.table = l->cb->words;
  p.n_smem = e8_smem_entries(ctx, l);
  p.scale2 = l->inv_rs;
  return l->bits == 2 ? fused_launch<E8Fmt<0>>(ctx, p, st)
       : l->bits == 3 ? fused_launch<E8Fmt<1>>(ctx, p, st)
                      : fused_launch<E8Fmt<2>>(ctx, p, st);
}
