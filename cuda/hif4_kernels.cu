/* hif4_kernels.cu - HiF4 layers on the GPU: weight upload (repacked), fused matmul, exact
 * dequantization to bf16 (for the cuBLAS path). Format: docs/hif4.md. */
#include <stdlib.h>
#include <string.h>
#include "fused_mma.cuh"

/* Device layout per 64-value unit: 8 words of 4-bit codes + 1 metadata word.
 * The S1P2 nibble (sign, magnitude k) is stored biased: c = 8 + (sign ? -k : k), in 1..15.
 * Word q holds the 8 codes of group q (elements 8q..8q+7): element 8q+2p in bits 4p..4p+3,
 * element 8q+2p+1 in bits 16+4p..16+4p+3 (the pair p lands in the two halves of a bf16 pair).
 * Metadata: bits 0..7 e6m2, 8..15 e1_8 (bit q = group of 8 q), 16..31 e1_16 (bit j = group of 4 j). */
struct glq_cuda_hif4 {
  int64_t out, in, rows_pad, units_pad; /* units_pad: ceil(in/64) rounded up to 4 (one K step) */
  uint8_t *nib, *meta;
  int64_t pitch1, pitch2;
};

/* Exact bf16 pairs of group i of a unit: value = f * m, f = (scale/4) * 2^(e1_8 + e1_16), m = c - 8
 * in -7..7 (c is the biased code stored on the device). bf16 bits of scale/2 = (code << 5) + 0x2700
 * (exponent E - 48 - 1, two mantissa bits). With a = 8 + c/2 (the E8 bit trick), f*m = a*2f - 12*2f,
 * one fma a pair, exact (every product and the result have at most 8 significant bits). */
__device__ __forceinline__ void hif4_pairs(uint32_t w, uint32_t meta, int i, uint32_t e[4]) {
  const uint32_t base = ((meta & 0xFFu) << 5) + 0x2700u + (((meta >> (8 + i)) & 1u) << 7);
  const uint32_t m12 = 0xC140C140u, nz = 0x80008000u; /* -12, -0 */
  const uint32_t mask = 0x00780078u, magic = 0x41004100u;
  /* bf16 bits of 2f for the two groups of 4 of this group of 8 */
  const uint32_t fa = base + (((meta >> (16 + 2 * i)) & 1u) << 7), fb = base + (((meta >> (17 + 2 * i)) & 1u) << 7);
  const uint32_t fa2 = fa * 0x10001u, fb2 = fb * 0x10001u;
  const uint32_t na = bf16x2_fma(fa2, m12, nz), nb = bf16x2_fma(fb2, m12, nz);
  e[0] = bf16x2_fma(((w << 3) & mask) | magic, fa2, na);
  e[1] = bf16x2_fma(((w >> 1) & mask) | magic, fa2, na);
  e[2] = bf16x2_fma(((w >> 5) & mask) | magic, fb2, nb);
  e[3] = bf16x2_fma(((w >> 9) & mask) | magic, fb2, nb);
}

struct Hif4Raw { uint4 nib[2][2]; uint32_t meta[2]; };

struct Hif4Fmt {
  static constexpr int kStages = 1;
  static constexpr bool kTable = false;
  static constexpr int kPrefetch = 1;
  static constexpr uint32_t kBias = 0;
  typedef Hif4Raw Raw;
  static __device__ __forceinline__ void load(const FusedParams &p, int row0, int s, int g, int t, Raw &r) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = row0 + 8 * h + g, unit = (int64_t)s * 4 + t;
      const uint8_t *b = p.w1 + row * p.pitch1 + unit * 32;
      r.nib[h][0] = ldg_stream16(b);
      r.nib[h][1] = ldg_stream16(b + 16);
      r.meta[h] = ldg_stream4(p.w2 + row * p.pitch2 + unit * 4);
    }
  }
  static __device__ __forceinline__ void gather(const FusedParams &, const Raw &r, int i, int h, const uint32_t *,
                                                uint32_t (&wd)[1]) {
    wd[0] = u4get(r.nib[h][i >> 2], i & 3);
  }
  static __device__ __forceinline__ void unpack(const FusedParams &, const Raw &r, int i, int h, const uint32_t (&wd)[1],
                                                uint32_t (&e)[1][4]) {
    hif4_pairs(wd[0], r.meta[h], i, e[0]);
  }
};

static __global__ void __launch_bounds__(256) hif4_dequant_kernel(const uint8_t *__restrict__ nib, const uint8_t *__restrict__ meta,
                                                           int64_t pitch1, int64_t pitch2, int out, int in,
                                                           uint16_t *__restrict__ w) {
  const int groups = in / 8, total = out * groups;
  for (int gi = blockIdx.x * blockDim.x + threadIdx.x; gi < total; gi += gridDim.x * blockDim.x) {
    const int r = gi / groups, j = gi - r * groups;
    const uint32_t wd = *reinterpret_cast<const uint32_t *>(nib + r * pitch1 + 4 * j);
    const uint32_t m = *reinterpret_cast<const uint32_t *>(meta + r * pitch2 + 4 * (j >> 3));
    uint32_t e[4];
    hif4_pairs(wd, m, j & 7, e);
    *reinterpret_cast<uint4 *>(w + (int64_t)r * in + 8 * j) = make_uint4(e[0], e[1], e[2], e[3]);
  }
}

/* S1P2 nibble -> biased code 8 + m (m = +-magnitude, -0 -> 8) */
static uint32_t hif4_bias(uint32_t nib) { return (nib & 8u) ? 8u - (nib & 7u) : 8u + (nib & 7u); }

extern "C" void glq_cuda_hif4_free(glq_cuda_hif4 *l) {
  if (!l) return;
  cudaFree(l->nib);
  cudaFree(l->meta);
  free(l);
}

extern "C" int glq_cuda_hif4_create(int64_t out, int64_t in, const uint8_t *e6m2, const uint8_t *e1_8,
                                    const uint8_t *e1_16, const uint8_t *s1p2, glq_cuda_hif4 **layer) {
  *layer = NULL;
  if (out < 1 || in < 8 || in % 8 || out > (1 << 20) || in > (1 << 20) || out * in > ((int64_t)1 << 31))
    return glq_error(GLQ_EINVAL, "glq_cuda_hif4_create: shape %lld x %lld (in must be a multiple of 8)", (long long)out, (long long)in);
  glq_cuda_hif4 *l = (glq_cuda_hif4 *)calloc(1, sizeof *l);
  if (!l) return glq_error(GLQ_ENOMEM, "glq_cuda_hif4_create: out of host memory");
  const int64_t nb = (in + 63) / 64;
  l->out = out;
  l->in = in;
  l->rows_pad = glq_round_up(out, GLQ_ROWS_PAD);
  l->units_pad = glq_round_up(nb, GLQ_STEP_K / 64);
  l->pitch1 = 32 * l->units_pad;
  l->pitch2 = 4 * l->units_pad;
  const size_t b1 = (size_t)l->rows_pad * l->pitch1, b2 = (size_t)l->rows_pad * l->pitch2;
  uint32_t *h1 = (uint32_t *)calloc(b1, 1), *h2 = (uint32_t *)calloc(b2, 1);
  cudaError_t e = (h1 && h2) ? cudaSuccess : cudaErrorMemoryAllocation;
  if (e == cudaSuccess) {
    for (int64_t r = 0; r < out; ++r)
      for (int64_t u = 0; u < nb; ++u) {
        const int64_t src = r * nb + u;
        const uint8_t *s = s1p2 + 32 * src;
        uint32_t *dw = h1 + (r * l->pitch1 + 32 * u) / 4;
        for (int q = 0; q < 8; ++q) {
          uint32_t wd = 0;
          for (int p = 0; p < 4; ++p)
            wd |= (hif4_bias(s[4 * q + p] & 15u) << (4 * p)) | (hif4_bias(s[4 * q + p] >> 4) << (16 + 4 * p));
          dw[q] = wd;
        }
        h2[(r * l->pitch2 + 4 * u) / 4] = (uint32_t)e6m2[src] | ((uint32_t)e1_8[src] << 8) |
                                          ((uint32_t)e1_16[2 * src] << 16) | ((uint32_t)e1_16[2 * src + 1] << 24);
      }
    e = cudaMalloc(&l->nib, b1);
    if (e == cudaSuccess) e = cudaMalloc(&l->meta, b2);
    if (e == cudaSuccess) e = cudaMemcpy(l->nib, h1, b1, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) e = cudaMemcpy(l->meta, h2, b2, cudaMemcpyHostToDevice);
  }
  free(h1);
  free(h2);
  if (e != cudaSuccess) {
    glq_cuda_hif4_free(l);
    return glq_error(GLQ_ENOMEM, "glq_cuda_hif4_create: %s", cudaGetErrorString(e));
  }
  *layer = l;
  return GLQ_OK;
}

extern "C" size_t glq_cuda_hif4_bytes(const glq_cuda_hif4 *l) {
  return (size_t)(l->pitch1 + l->pitch2) * (size_t)l->rows_pad;
}

extern "C" int glq_cuda_hif4_dequant(glq_cuda_ctx *ctx, const glq_cuda_hif4 *l, uint16_t *w, void *stream) {
  const int64_t need = (l->out * (l->in / 8) + 255) / 256;
  const int grid = (int)(need < (int64_t)ctx->sms * 8 ? need : (int64_t)ctx->sms * 8);
  hif4_dequant_kernel<<<grid, 256, 0, (cudaStream_t)stream>>>(l->nib, l->meta, l->pitch1, l->pitch2, (int)l->out,
                                                             (int)l->in, w);
  GLQ_CUDA_LAUNCHED();
  return GLQ_OK;
}

extern "C" int glq_cuda_hif4_matmul(glq_cuda_ctx *ctx, const glq_cuda_hif4 *l, const uint16_t *x, const uint16_t *x_lo, int64_t B,
                                    void *y, int y_bf16, glq_cuda_path path, void *stream) {
  cudaStream_t st = (cudaStream_t)stream;
  int rc = glq_cuda_pick_path(ctx, l->out, l->in, B, path, &path);
  if (rc) return rc;
  if (path == GLQ_CUDA_DEQUANT) {
    rc = glq_cuda_hif4_dequant(ctx, l, ctx->scratch, stream);
    return rc ? rc : glq_cuda_gemm_scratch(ctx, l->out, l->in, x, x_lo, B, y, y_bf16, 1.f, st);
  }
  const FusedParams p = fused_params(x, x_lo, y, y_bf16, B, l->out, l->in, (int)(l->units_pad / 4), l->nib, l->meta,
                                     l->pitch1, l->pitch2, 1.f);
  return fused_launch<Hif4Fmt>(ctx, p, st);
}
