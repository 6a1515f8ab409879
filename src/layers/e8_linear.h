/* e8_linear.h - glq's E8-RHT quantized linear layer behind the glq_linear interface (tensors:
 * docs/format.md; forward math: ../shared/docs/glq-spec.md §7.1, outside this repository).
 * In the convention of rht.h, with W̃ (mp x np) stored as 8-column blocks:
 *   W̃[i, 8j:8j+8] = Wscale * (C[Qidxs[i,j]] + inv_rs * C2[Qidxs2[i,j]])   (indices masked with 0xFFFF)
 *   W = crop_{m x n}( diag(SU) · Hmᵀ · W̃ · Hn · diag(SV) ),   y = x·Wᵀ + b
 * C is the 65536 table; C2 is C for 4 bits and its first 256 rows for 3 bits (a prefix of C).
 * mp >= m and np >= n are the stored (padded) sizes: multiples of 8 here and in glq >= 0.2.9,
 * powers of two in glq 0.2.7 checkpoints; both work. Hm, Hn are the plans of `transform` (hadamard.h):
 * the default kind for ours and pow2-padded, GLQ_HADAMARD_GLQ_BLOCKDIAG for glq >= 0.2.9 checkpoints
 * and `glq quantize --glq-compat` (any stored size, blocks of its binary expansion). */
#ifndef GLQ_E8_LINEAR_H
#define GLQ_E8_LINEAR_H
#include <stdint.h>
#include "linear.h"
#include "../quant/hadamard.h"

typedef struct {
  int64_t out, in;          /* m, n: the layer's shape */
  int64_t out_pad, in_pad;  /* mp, np: Qidxs is (mp, np/8), SU (mp), SV (np) */
  int bits;                 /* 2: no stage 2; 3: Qidxs2 in [0, 256); 4: Qidxs2 in [0, 65536) */
  const int16_t *qidxs;     /* mp x np/8 */
  const int16_t *qidxs2;    /* mp x np/8, or NULL for 2 bits */
  float inv_rs;             /* 1/resid_scale (stage 2 only) */
  float wscale;
  const float *su, *sv;     /* mp and np entries */
  const float *bias;        /* m entries or NULL */
  glq_hadamard_kind transform; /* zero = GLQ_HADAMARD_DEFAULT */
  int codebook;             /* GLQ_CODEBOOK_E8 (zero: C the shell book, C2 its prefix or itself; kind "e8")
                             * or GLQ_CODEBOOK_E8P (C the E8P book, C2 E81B at 3 bits or E8P at 4; kind "e8p");
                             * last, so positional initializers of the older fields keep working */
} glq_e8_linear_desc;

/* New layer holding copies of the descriptor's arrays; errors name the bad field. */
int glq_e8_linear_new(const glq_e8_linear_desc *d, glq_linear **out);
/* The descriptor of an existing layer (vt->kind "e8" or "e8p"), pointing at the layer's own arrays (valid while
 * it lives; Qidxs are the stored 16-bit patterns). GLQ_EINVAL for another kind. */
int glq_e8_linear_desc_of(const glq_linear *l, glq_e8_linear_desc *d);

#endif
